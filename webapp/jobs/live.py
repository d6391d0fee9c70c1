"""A job's live channel in Redis: what the worker publishes every step and the job page streams.

Per job: a pub/sub channel of JSON events (`step`, `eval`, `log`, `state`), a `latest` key holding the last
progress snapshot (so a page opened mid-run starts from it), a capped list of log lines, and a `cancel` flag the
worker's reporter polls. Redis is a fast path only: the database keeps everything that matters, so a failed
publish is logged and ignored. Pure redis-py, no torch: the web process and the workers both use it.
"""
from __future__ import annotations

import json
import logging
import time
from functools import lru_cache

import redis
from django.conf import settings

log = logging.getLogger(__name__)
LOG_LINES_KEPT = 200
KEY_TTL_S = 7 * 24 * 3600


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=3, health_check_interval=30)


def client() -> redis.Redis:
    return _client(settings.REDIS_URL)


def key(job_id: int, part: str) -> str:
    return f"loraworks:job:{job_id}:{part}"


def channel(job_id: int) -> str:
    # Pub/sub channels, unlike keys, are shared by every database of a Redis server: the database number keeps
    # two installs (or test runs) on one server from hearing each other's jobs.
    database = client().connection_pool.connection_kwargs.get("db", 0)
    return f"loraworks:db{database}:job:{job_id}:live"


def publish(job_id: int, event: dict) -> None:
    """Send one event to the job's subscribers; `step` events also become the latest snapshot, `log` lines are
    kept (last LOG_LINES_KEPT)."""
    event = {**event, "t": time.time()}
    data = json.dumps(event)
    try:
        pipe = client().pipeline(transaction=False)
        if event["type"] == "step":
            pipe.set(key(job_id, "latest"), data, ex=KEY_TTL_S)
        elif event["type"] == "log":
            pipe.rpush(key(job_id, "log"), event["line"])
            pipe.ltrim(key(job_id, "log"), -LOG_LINES_KEPT, -1)
            pipe.expire(key(job_id, "log"), KEY_TTL_S)
        pipe.publish(channel(job_id), data)
        pipe.execute()
    except redis.RedisError as error:
        log.warning("job %s: live publish failed (%s); the database still gets progress", job_id, error)


def publish_state(job_id: int, previous: str, state: str, reason: str = "") -> None:
    publish(job_id, {"type": "state", "previous": previous, "state": state, "reason": reason})


def latest(job_id: int) -> dict | None:
    try:
        raw = client().get(key(job_id, "latest"))
    except redis.RedisError:
        return None
    return json.loads(raw) if raw else None


def log_lines(job_id: int, count: int = 50) -> list[str]:
    try:
        return [line.decode(errors="replace") for line in client().lrange(key(job_id, "log"), -count, -1)]
    except redis.RedisError:
        return []


def request_cancel(job_id: int) -> None:
    """Raise the flag a running job's reporter checks every step (it raises: the web must know it was set)."""
    client().set(key(job_id, "cancel"), "1", ex=KEY_TTL_S)


def cancel_requested(job_id: int) -> bool:
    return bool(client().exists(key(job_id, "cancel")))


def reset(job_id: int) -> None:
    """Drop whatever Redis holds under this job id (a database rebuilt from scratch reuses ids)."""
    try:
        client().delete(*(key(job_id, part) for part in ("latest", "log", "cancel", "lease", "resent")))
    except redis.RedisError as error:
        log.warning("job %s: could not clear its live keys (%s)", job_id, error)


def subscribe(job_id: int) -> redis.client.PubSub:
    pubsub = client().pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel(job_id))
    return pubsub
