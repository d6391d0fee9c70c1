"""Template filters for numbers on the results pages: metrics, changes, shares of a whole."""
import math

from django import template
from django.template.defaultfilters import filesizeformat

register = template.Library()


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@register.filter
def metric(value, kind: str = "number") -> str:
    """"—" for nothing; kind "percent" shows a 0–1 fraction as %, "share" a number already in % (3 significant
    digits), "bytes" a size, "seconds" a duration to 0.1 s, "whole" a rounded count, else 4 significant digits."""
    if not _number(value):
        return "—" if value is None else str(value)
    if kind == "percent":
        return f"{100 * value:.1f} %"
    if kind == "share":
        return f"{value:.3g} %"
    if kind == "seconds":
        return f"{value:,.1f} s"
    if kind == "whole":
        return f"{round(value):,}"
    if kind == "bytes":
        return filesizeformat(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.4g}" if abs(value) < 1e6 else f"{value:,.0f}"


@register.filter
def change(row: dict) -> str:
    """The signed change of an eval row (in points for percentages)."""
    delta = row.get("change")
    if not _number(delta):
        return "—"
    return f"{100 * delta:+.1f} pts" if row.get("percent") else f"{delta:+.4g}"


@register.filter
def shade(fraction) -> str:
    """A CSS background for a confusion-matrix cell holding `fraction` of the largest count."""
    return f"background: rgba(79, 70, 229, {0.08 + 0.6 * float(fraction):.2f})"
