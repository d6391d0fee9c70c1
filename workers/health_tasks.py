"""Worker health: whether a worker reaches the database and Redis, asked two ways.

- the `workers.health` task, answered by whichever worker takes it from a queue;
- the `health` remote-control command, answered by the named worker's own main process (so a `train`-only worker
  can be checked too): `python -m workers.healthcheck NAME`, which compose uses as the workers' healthcheck.
"""
import socket

import redis
from celery.worker.control import inspect_command
from django.conf import settings
from django.db import close_old_connections, connection

from workers.celery_app import app


def reachability() -> dict:
    """This process's view: its host name and whether the database and Redis answer."""
    try:
        close_old_connections()  # a connection the database dropped since last time is replaced, not reported
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            database_ok = cursor.fetchone() == (1,)
    except Exception:
        database_ok = False
    try:
        redis_ok = bool(redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2).ping())
    except redis.RedisError:
        redis_ok = False
    return {"worker": socket.gethostname(), "database": database_ok, "redis": redis_ok}


@app.task(name="workers.health")
def health() -> dict:
    return reachability()


@inspect_command(default_timeout=5.0)
def health_check(state, **kwargs):
    """Remote control: the worker's reachability, from its main process."""
    return reachability()
