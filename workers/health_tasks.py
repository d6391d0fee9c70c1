"""Health check task: a worker answers with its name and whether it reaches the database and Redis."""
import socket

import redis
from django.conf import settings
from django.db import connection

from workers.celery_app import app


@app.task(name="workers.health")
def health() -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        database_ok = cursor.fetchone() == (1,)
    redis_ok = bool(redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2).ping())
    return {"worker": socket.gethostname(), "database": database_ok, "redis": redis_ok}
