"""Template filters for the numbers the catalog and job pages show: `thousands` (1,234,567) and `compact` (22.7 M)."""
from django import template

register = template.Library()


@register.filter
def thousands(value):
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return value


@register.filter
def compact(value):
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    for limit, suffix in ((1e9, " B"), (1e6, " M"), (1e3, " k")):
        if abs(number) >= limit:
            return f"{number / limit:.1f}{suffix}"
    return f"{number:g}"
