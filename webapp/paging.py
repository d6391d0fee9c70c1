"""Paging the site's lists: PER_PAGE rows a page, the page number from ?page=, and the other query parameters
(filter, search) kept in the page links. One COUNT and one page of rows, whatever the list's length."""
from __future__ import annotations

from django.core.paginator import Paginator

PER_PAGE = 50


def paged(request, queryset, per_page: int = PER_PAGE) -> dict:
    """{"page": the requested page (the last one when past the end), "keep": the query string without `page`}."""
    page = Paginator(queryset, per_page).get_page(request.GET.get("page"))
    keep = request.GET.copy()
    keep.pop("page", None)
    return {"page": page, "keep": keep.urlencode()}
