"""Rendered fragments (a page of a list's rows), cached under what they show.

Each item is a flat dict of exactly the values its template shows. The key is a digest of those values, of the
template's source, of what else shapes the output (language, time zone, URL prefix) and of the scope (the team): a
change to any shown value, however it was written (a save, a queryset update from a worker, a rename of a related
row), makes a new key, so nothing needs invalidating and a stale fragment cannot be served. Old keys expire
(webapp.cache.TIMEOUT_S). The cache is an accelerator only: when Redis cannot be reached, the items are rendered.
"""
from __future__ import annotations

import hashlib
import logging

import redis
from django.core.cache import cache
from django.template.loader import get_template
from django.urls import get_script_prefix
from django.utils import timezone, translation
from django.utils.safestring import SafeString, mark_safe

log = logging.getLogger(__name__)


def fragment_key(template, scope, items: list[dict]) -> str:
    """The cache key of `items` rendered by `template` (a loaded template) for `scope`."""
    digest = hashlib.blake2b(template.template.source.encode(), digest_size=16)
    digest.update(repr((translation.get_language(), timezone.get_current_timezone_name(), get_script_prefix(),
                        items)).encode())
    return f"fragment:{template.template.name}:{scope}:{digest.hexdigest()}"


def render_each(template_name: str, name: str, items: list[dict], scope) -> SafeString:
    """The items rendered one after the other by `template_name` (each as the variable `name`), from the cache when
    the same items were rendered before for the same `scope`."""
    if not items:
        return mark_safe("")
    template = get_template(template_name)

    def rendered() -> str:
        return "".join(template.render({name: item}) for item in items)

    key = fragment_key(template, scope, items)
    try:
        html = cache.get(key)
    except redis.RedisError as error:
        log.warning("fragment cache unreachable (%s): rendering", error)
        return mark_safe(rendered())
    if html is None:
        html = rendered()
        try:
            cache.set(key, html)
        except redis.RedisError as error:
            log.warning("fragment cache unreachable (%s): not cached", error)
    return mark_safe(html)
