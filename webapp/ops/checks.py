"""What the operations page and the health endpoints check: the database, Redis, the workers (through their
`health` remote-control command, workers.ops_tasks), queue lengths, and artifact storage.

Each check returns plain data and never raises: a failure is reported as a value with the error's text.
"""
from __future__ import annotations

import redis
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import connection

from webapp import storage
from webapp.jobs import routing
from webapp.jobs.queue import QUEUES, app

WORKER_REPLY_S = 1.0
# kombu's Redis transport keeps messages of priority p > 0 in a list named "<queue>\x06\x16<p>".
PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


def _redis():
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


def database() -> dict:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return {"ok": True, "detail": connection.vendor}
    except Exception as error:
        return {"ok": False, "detail": f"{type(error).__name__}: {error}"}


def redis_server() -> dict:
    try:
        _redis().ping()
        return {"ok": True, "detail": settings.REDIS_URL.split("@")[-1]}  # the host part: no password shown
    except Exception as error:
        return {"ok": False, "detail": f"{type(error).__name__}: {error}"}


def queue_lengths(extra: tuple[str, ...] = ()) -> dict[str, int | None]:
    """Messages waiting in each Celery queue, the app's own and `extra` ones (None when Redis does not answer)."""
    names = QUEUES + tuple(extra)
    try:
        client = _redis()
        return {name: sum(client.llen(name + suffix) for suffix in PRIORITY_SUFFIXES) for name in names}
    except redis.RedisError:
        return {name: None for name in names}


def workers(destination: list[str] | None = None, timeout_s: float = WORKER_REPLY_S) -> dict[str, dict]:
    """{worker name: its health answer} for every worker that answered within `timeout_s`."""
    try:
        replies = app.control.broadcast("health", reply=True, timeout=timeout_s, destination=destination)
    except Exception:  # no broker: no worker can be reached either; redis_server() says why
        return {}
    return dict(sorted((name, answer) for reply in replies for name, answer in reply.items()))


def live_worker_classes() -> list[str]:
    """The worker classes some live worker serves (webapp.jobs.routing); asking takes up to WORKER_REPLY_S."""
    return routing.classes_of(workers())


def artifact_storage() -> dict:
    try:
        storage.check_reachable(default_storage)
        ok, detail = True, ""
    except Exception as error:
        ok, detail = False, f"{type(error).__name__}: {error}"
    return {"ok": ok, "detail": detail, "where": storage.describe(default_storage),
            "free_bytes": storage.free_bytes(default_storage)}
