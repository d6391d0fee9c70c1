"""Django's cache on the app's Redis (settings.CACHES): values stored as JSON, never pickled, so whoever can write
to Redis cannot make the web process run code; short socket timeouts, so a Redis that went away costs a page at
most a second (callers treat a cache error as a miss: webapp.fragments).
"""
from __future__ import annotations

import json

TIMEOUT_S = 3600
KEY_PREFIX = "loraworks:cache"


class JsonSerializer:
    """What django.core.cache.backends.redis stores: JSON text (integers stay bare, so incr() works)."""

    def dumps(self, value) -> bytes | int:
        return value if type(value) is int else json.dumps(value).encode()

    def loads(self, data: bytes):
        return json.loads(data)


def redis_cache(url: str) -> dict:
    """The CACHES setting for Redis at `url`."""
    return {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url,
                        "KEY_PREFIX": KEY_PREFIX, "TIMEOUT": TIMEOUT_S,
                        "OPTIONS": {"serializer": "webapp.cache.JsonSerializer", "socket_connect_timeout": 1,
                                    "socket_timeout": 1}}}
