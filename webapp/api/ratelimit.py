"""Per-token rate limits on the expensive calls (job creation, playground), counted in Redis.

A fixed window per token and action: `INCR` a key named after the window, which expires with it. Limits are the
settings API_RATE_LIMIT_JOBS and API_RATE_LIMIT_PLAYGROUND, parsed when settings load (webapp.env.env_rate): a
Rate(count, period_s), or None for no limit.
"""
import time
from functools import lru_cache

import redis
from django.conf import settings

from webapp.api.errors import ApiError
from webapp.env import Rate


def limit_for(action: str) -> Rate | None:
    return getattr(settings, f"API_RATE_LIMIT_{action.upper()}")


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
