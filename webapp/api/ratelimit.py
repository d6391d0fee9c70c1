"""Per-token rate limits on the expensive calls (job creation, playground), counted in Redis.

A fixed window per token and action: `INCR` a key named after the window, which expires with it. Limits are
"N/second|minute|hour|day" strings from the settings API_RATE_LIMIT_JOBS and API_RATE_LIMIT_PLAYGROUND;
"0" or "" switches a limit off.
"""
import time
from functools import lru_cache

import redis
from django.conf import settings

from webapp.api.errors import ApiError

PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def parse_rate(text: str) -> tuple[int, int] | None:
    """"30/hour" -> (30, 3600); "0" or "" -> None (no limit)."""
    text = (text or "").strip()
    if text in ("", "0"):
        return None
    count, _, period = text.partition("/")
    try:
        return int(count), PERIODS[period.strip().rstrip("s") or "minute"]
    except (ValueError, KeyError):
        raise ValueError(f"rate limit {text!r} must look like 30/hour (periods: {', '.join(PERIODS)})") from None


def limit_for(action: str) -> tuple[int, int] | None:
    return parse_rate(getattr(settings, f"API_RATE_LIMIT_{action.upper()}"))


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2)


def check_rate(token_id: int, action: str) -> None:
    """Count one call of `action` by the token; raise a 429 ApiError once the window's budget is spent."""
    limit = limit_for(action)
    if limit is None:
        return
    allowed, period = limit
    window = int(time.time() // period)
    key = f"loraworks:api-rate:{action}:{token_id}:{period}:{window}"
    pipe = _client(settings.REDIS_URL).pipeline()
    pipe.incr(key)
    pipe.expire(key, period + 1)
    used, _ = pipe.execute()
    if used > allowed:
        retry_after = max(1, int((window + 1) * period - time.time()))
        raise ApiError(429, f"rate limit of {allowed} {action} calls per {period} s reached; retry in {retry_after} s",
                       headers={"Retry-After": str(retry_after)})
