"""Limit/offset pages for the API's lists: `{"items": [...], "count": N, "next": URL | null}`."""
from django.http import JsonResponse

from webapp.api.errors import ApiError

DEFAULT_LIMIT, MAX_LIMIT = 50, 200
MAX_OFFSET = 10**9  # databases refuse offsets past a 64-bit integer; no list here gets near this


def int_param(request, name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
    raw = request.GET.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be a whole number", field=name) from None
    if value < minimum or (maximum is not None and value > maximum):
        raise ApiError(400, f"{name} must be from {minimum} to {maximum if maximum is not None else '∞'}", field=name)
    return value


def page_response(request, queryset, serialize) -> JsonResponse:
    limit = int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = int_param(request, "offset", 0, 0, MAX_OFFSET)
    count = queryset.count()
    items = [serialize(obj) for obj in queryset[offset:offset + limit]]
    next_url = None
    if offset + limit < count:
        query = request.GET.copy()
        query["offset"], query["limit"] = str(offset + limit), str(limit)
        next_url = request.build_absolute_uri(f"{request.path}?{query.urlencode()}")
    return JsonResponse({"items": items, "count": count, "next": next_url})
