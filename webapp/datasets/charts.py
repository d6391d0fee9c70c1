"""Geometry for the report's pictures, drawn as inline SVG by the templates: the token-length histogram and the
label distribution. Pure functions of the validator's report."""
from __future__ import annotations

WIDTH, HEIGHT = 640, 220
MARGIN_LEFT, MARGIN_BOTTOM, MARGIN_TOP = 44, 28, 10


def length_histogram(histogram: dict) -> dict | None:
    """{bars: [{x, y, width, height, count, start, end}], ticks, max_line_x, ...} for the SVG, or None if empty."""
    counts, edges = histogram.get("counts") or [], histogram.get("edges") or []
    if not counts or len(edges) != len(counts) + 1:
        return None
    plot_w, plot_h = WIDTH - MARGIN_LEFT - 8, HEIGHT - MARGIN_BOTTOM - MARGIN_TOP
    top = max(counts) or 1
    span = edges[-1] - edges[0] or 1
    x_of = lambda value: MARGIN_LEFT + plot_w * (value - edges[0]) / span  # noqa: E731
    bars = []
    for count, start, end in zip(counts, edges, edges[1:]):
        height = plot_h * count / top
        bars.append({"x": round(x_of(start) + 1, 1), "width": round(max(1.0, x_of(end) - x_of(start) - 2), 1),
                     "y": round(MARGIN_TOP + plot_h - height, 1), "height": round(height, 1),
                     "count": count, "start": start, "end": end})
    max_length = histogram.get("max_length")
    marker = round(x_of(max_length), 1) if max_length and edges[0] <= max_length <= edges[-1] else None
    label_every = max(1, len(edges) // 5)
    ticks = [{"x": round(x_of(edge), 1), "label": edge} for edge in edges[::label_every]]
    return {"width": WIDTH, "height": HEIGHT, "bars": bars, "ticks": ticks, "top": top, "marker_x": marker,
            "max_length": max_length, "axis_y": MARGIN_TOP + plot_h, "left": MARGIN_LEFT, "top_y": MARGIN_TOP,
            "right": WIDTH - 8}


def label_bars(labels: dict | None) -> list[dict]:
    """[{label, count, percent, width}] sorted by count, widths relative to the largest label (for CSS bars)."""
    if not labels:
        return []
    total, top = sum(labels.values()) or 1, max(labels.values()) or 1
    ordered = sorted(labels.items(), key=lambda item: (-item[1], item[0]))
    return [{"label": label, "count": count, "percent": round(100 * count / total, 1),
             "width": round(100 * count / top, 1)} for label, count in ordered]
