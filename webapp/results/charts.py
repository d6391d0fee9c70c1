"""Inline SVG pictures for the results pages, drawn on the server: size bars and line charts (loss curves).

Each function returns markup marked safe; every piece of text in it is escaped here. Styling comes from
results.css through class names (.bar, .series-N, .axis), so the pictures follow the page's colours.
"""
from __future__ import annotations

import math

from django.utils.html import escape
from django.utils.safestring import mark_safe

PALETTE = 4  # results.css defines .series-0 … .series-3 (compare takes at most four jobs)


def bars(rows: list[tuple[str, float, str]], *, title: str, width: int = 640) -> str:
    """Horizontal bars on one linear scale: rows of (label, value, value as text). The smallest bar keeps a
    visible sliver so a tiny adapter next to a big model still shows."""
    label_w, row_h, gap = 190, 26, 12
    top = max((value for _, value, _ in rows), default=0) or 1
    height = len(rows) * (row_h + gap) + gap
    scale = width - label_w - 120
    parts = [f'<svg class="chart bars" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
             f"<title>{escape(title)}</title>"]
    for i, (label, value, text) in enumerate(rows):
        y = gap + i * (row_h + gap)
        length = max(2.0, scale * value / top)
        parts += [
            f'<text class="label" x="{label_w - 8}" y="{y + row_h * 0.68:.1f}" text-anchor="end">{escape(label)}</text>',
            f'<rect class="bar series-{i % PALETTE}" x="{label_w}" y="{y}" width="{length:.1f}" height="{row_h}" rx="3"/>',
            f'<text class="value" x="{label_w + length + 6:.1f}" y="{y + row_h * 0.68:.1f}">{escape(text)}</text>',
        ]
    parts.append("</svg>")
    return mark_safe("".join(parts))


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (steps of 1, 2 or 5 times a power of ten)."""
    if high <= low:
        high = low + 1
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    start = math.floor(low / step) * step
    ticks, value = [], start
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < high:
        ticks.append(round(value, 12))
    return ticks


def _label(value: float) -> str:
    return f"{value:g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"


def line_chart(series: list[dict], *, title: str, x_label: str = "step", y_label: str = "loss",
               width: int = 720, height: int = 300) -> str:
    """Lines on shared axes. A series is {"name", "points": [(x, y)], "style": "line" | "dots", "color": i}.

    "dots" draws markers joined by a dashed line (eval points); colours are by `color` index so a job's train
    and eval series match."""
    points = [p for s in series for p in s["points"] if p[1] is not None and math.isfinite(p[1])]
    if not points:
        return mark_safe(f'<p class="muted">No {escape(y_label)} recorded yet.</p>')
    left, right, top, bottom = 56, 16, 14, 40
    xs = nice_ticks(min(p[0] for p in points), max(p[0] for p in points))
    ys = nice_ticks(min(p[1] for p in points), max(p[1] for p in points))
    plot_w, plot_h = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + plot_w * (x - xs[0]) / ((xs[-1] - xs[0]) or 1)

    def sy(y: float) -> float:
        return top + plot_h * (1 - (y - ys[0]) / ((ys[-1] - ys[0]) or 1))

    parts = [f'<svg class="chart lines" viewBox="0 0 {width} {height + 24 * len(series)}" role="img" '
             f'aria-label="{escape(title)}"><title>{escape(title)}</title>']
    for y in ys:
        parts.append(f'<line class="grid-line" x1="{left}" x2="{width - right}" y1="{sy(y):.1f}" y2="{sy(y):.1f}"/>'
                     f'<text class="tick" x="{left - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{_label(y)}</text>')
    for x in xs:
        parts.append(f'<text class="tick" x="{sx(x):.1f}" y="{top + plot_h + 16}" text-anchor="middle">'
                     f"{_label(x)}</text>")
    parts.append(f'<line class="axis" x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}"/>'
                 f'<text class="axis-label" x="{left + plot_w / 2:.1f}" y="{top + plot_h + 34}" '
                 f'text-anchor="middle">{escape(x_label)}</text>'
                 f'<text class="axis-label" transform="translate(14 {top + plot_h / 2:.1f}) rotate(-90)" '
                 f'text-anchor="middle">{escape(y_label)}</text>')
    for s in series:
        kept = [(x, y) for x, y in s["points"] if y is not None and math.isfinite(y)]
        color = f"series-{s.get('color', 0) % PALETTE}"
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in kept)
        dashed = " dashed" if s.get("style") == "dots" else ""
        if len(kept) > 1:
            parts.append(f'<polyline class="line {color}{dashed}" points="{path}"/>')
        if s.get("style") == "dots" or len(kept) == 1:
            parts += [f'<circle class="dot {color}" cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="4">'
                      f"<title>{escape(s['name'])}: {_label(y)} at {escape(x_label)} {_label(x)}</title></circle>"
                      for x, y in kept]
    for i, s in enumerate(series):
        y = height + 6 + 24 * i
        color = f"series-{s.get('color', 0) % PALETTE}"
        dashed = " dashed" if s.get("style") == "dots" else ""
        parts.append(f'<line class="line {color}{dashed}" x1="{left}" x2="{left + 28}" y1="{y}" y2="{y}"/>'
                     f'<text class="legend" x="{left + 36}" y="{y + 4}">{escape(s["name"])}</text>')
    parts.append("</svg>")
    return mark_safe("".join(parts))
