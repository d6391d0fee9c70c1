"""What the job page reads while a job runs: a snapshot (database + Redis's latest step) and a server-sent
event stream relaying the job's Redis channel.

The stream subscribes before it takes the snapshot, so no event falls between the two. It ends when the job
reaches a terminal state, or after STREAM_MAX_S (the browser's EventSource reconnects by itself), which keeps a
gunicorn thread from being held forever; a comment line every PING_S finds clients that went away. When Redis goes
away (a restart), the stream ends the same way: the reconnection, RECONNECT_MS later, starts from a fresh snapshot
(the database has everything that matters) and subscribes again.
"""
from __future__ import annotations

import json
import logging
import time

import redis
from django.http import StreamingHttpResponse

from webapp.jobs import live, queue, states

STREAM_MAX_S = 300
PING_S = 15
RECONNECT_MS = 2000
log = logging.getLogger(__name__)


def progress_snapshot(job, since_step: int = -1) -> dict:
    """The job's state and progress (during a run the step comes from Redis, fresher than the database), its place
    in the queue while queued, and since when its worker is silent when it is."""
    progress = job.recorded_progress()
    log_lines = job.log_tail.splitlines()[-50:]
    if job.state == states.RUNNING:
        latest = live.latest(job.pk)
        if latest and latest.get("step", 0) >= progress.get("step", 0):
            progress = {k: v for k, v in latest.items() if k not in ("type", "t")}
        log_lines = live.log_lines(job.pk) or log_lines
    since = (queue.silent_worker(job) or {}).get("since")
    return {"id": job.pk, "state": job.state, "terminal": job.is_terminal, "error": job.error,
            "progress": progress, "log": log_lines, "position": queue.queue_position(job),
            "worker_silent_since": since.isoformat() if since else None,
            "history": [p for p in job.history if p.get("step", 0) > since_step]}


def _event(data: dict, name: str | None = None) -> str:
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {json.dumps(data)}\n\n"


def events(job):
    try:
        pubsub = live.subscribe(job.pk)
    except redis.RedisError as error:  # the snapshot still goes out: an error status would stop EventSource for good
        log.warning("job %s: no live stream without Redis (%s); the browser reconnects", job.pk, error)
        pubsub = None
    try:
        snapshot = progress_snapshot(job)
        yield f"retry: {RECONNECT_MS}\n" + _event(snapshot, "snapshot")
        if snapshot["terminal"] or pubsub is None:
            return
        started = last_sent = time.monotonic()
        while time.monotonic() - started < STREAM_MAX_S:
            try:
                message = pubsub.get_message(timeout=1.0)
            except redis.RedisError as error:
                log.warning("job %s: live stream lost Redis (%s); the browser reconnects", job.pk, error)
                return
            if message is None:
                if time.monotonic() - last_sent >= PING_S:
                    last_sent = time.monotonic()
                    yield ": ping\n\n"
                continue
            data = message["data"].decode()
            last_sent = time.monotonic()
            yield f"data: {data}\n\n"
            event = json.loads(data)
            if event.get("type") == "state" and event.get("state") in states.TERMINAL:
                return
    finally:
        if pubsub is not None:
            pubsub.close()


def sse_response(job) -> StreamingHttpResponse:
    response = StreamingHttpResponse(events(job), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # a proxy in front must pass events on at once
    return response
