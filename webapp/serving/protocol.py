"""The serving protocol between the web app and the `infer` workers (workers/serving_tasks.py), over Redis.

A *request* is JSON: {"id", "base": base model source, "rows": [row, ...]}, a row being
    {"side": the name its events carry, "adapter": the adapter's storage folder, or None for the base alone,
     "layout": "messages" (prompt is a list of chat messages) or a data format ("text", "alpaca",
               "prompt_completion", "chat": prompt is one text, laid out as the job's training rows were),
     "prompt": ..., "sampling": {"temperature", "top_p", "max_new_tokens", "seed"}, "stop": [str, ...]}
`submit` pushes it onto the list `pending_key(base)` and sends the task `workers.serve` (by name, with
webapp.jobs.queue.enqueue) to INFER_QUEUE. The task takes every request waiting for that base within a short window
(SERVE_BATCH_WINDOW_MS, at most SERVE_MAX_BATCH rows) and runs all their rows as one batch, each row with its own
adapter. The worker pushes each request's events onto the list `events_key(id)`, in order (a list, not pub/sub,
so nothing is lost if the reader starts late):

    {"status": "loading" | "generating"}
    {"side": ..., "prompt": "..."}                  the text the row's model is given (its chat template applied)
    {"side": ..., "text": "..."}                    a piece of generated text
    {"side": ..., "done": true, "finish_reason": "stop" | "length", "usage": {"prompt_tokens", "completion_tokens"}}
    {"error": "..."}                                a message a person can act on; the last event
    {"end": true, "stats": {...}}                   the last event; the worker's cache and batch figures

Workers serving a queue announce themselves every ANNOUNCE_EVERY_S in the sorted set `alive_key(queue)`, scored by
when the announcement expires, so a request that no worker would serve is refused at once (503) instead of hanging.
"""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import redis
from django.conf import settings

EVENTS_TTL_S = 600
ANNOUNCE_EVERY_S = 5.0
ANNOUNCE_TTL_S = 15.0


def redis_client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


def new_request_id() -> str:
    return uuid.uuid4().hex


def events_key(request_id: str) -> str:
    return f"serve:{request_id}:events"


def owner_key(request_id: str) -> str:
    """Holds the id of the team that asked, for readers that come back in another HTTP request (the playground)."""
    return f"serve:{request_id}:team"


def pending_key(base: str) -> str:
    return f"serve:pending:{base}"


def alive_key(queue: str) -> str:
    return f"serve:alive:{queue}"


def push(client: redis.Redis, request_id: str, event: dict) -> None:
    key = events_key(request_id)
    client.pipeline().rpush(key, json.dumps(event)).expire(key, EVENTS_TTL_S).execute()


def workers_alive(client: redis.Redis, queue: str) -> int:
    """How many workers announced within ANNOUNCE_TTL_S that they serve `queue`."""
    key = alive_key(queue)
    client.zremrangebyscore(key, "-inf", time.time())
    return client.zcard(key)


def announce(client: redis.Redis, queue: str, worker: str) -> None:
    client.zadd(alive_key(queue), {worker: time.time() + ANNOUNCE_TTL_S})


def withdraw(client: redis.Redis, queue: str, worker: str) -> None:
    client.zrem(alive_key(queue), worker)


def submit(client: redis.Redis, request: dict) -> None:
    """Queue `request` for its base and wake a worker of INFER_QUEUE for it."""
    from webapp.jobs.queue import SERVE_TASK, enqueue

    key = pending_key(request["base"])
    client.pipeline().rpush(key, json.dumps(request)).expire(key, EVENTS_TTL_S).execute()
    enqueue(SERVE_TASK, [request["base"]], on=settings.INFER_QUEUE)


def take_batch(client: redis.Redis, base: str, max_rows: int, window_s: float) -> list[dict]:
    """The requests waiting for `base`: the first at once, then more until `window_s` has passed since it or
    `max_rows` rows are taken (a request is never split). [] if another worker took them already."""
    key = pending_key(base)
    first = client.lpop(key)
    if first is None:
        return []
    batch = [json.loads(first)]
    rows = len(batch[0]["rows"])
    deadline = time.monotonic() + window_s
    while rows < max_rows:
        following = client.lindex(key, 0)
        if following is not None and rows + len(json.loads(following)["rows"]) > max_rows:
            break
        popped = client.lpop(key) if following is not None else None
        if popped is not None:
            batch.append(json.loads(popped))
            rows += len(batch[-1]["rows"])
            continue
        if time.monotonic() >= deadline:
            break
        time.sleep(min(0.002, max(deadline - time.monotonic(), 0)))
    return batch


def read_events(client: redis.Redis, request_id: str, timeout_s: float, *, wait_s: float = 1.0
                ) -> Iterator[dict | None]:
    """The request's events in order, until its last one (`end` or `error`); None after each `wait_s` without
    one (a chance to send a keep-alive); an `error` event if the worker stays silent for `timeout_s`. The
    events are consumed, and the request's keys removed once it has ended."""
    key = events_key(request_id)
    silent_until = time.monotonic() + timeout_s
    try:
        while True:
            popped = client.blpop([key], timeout=wait_s)
            if popped is None:
                if time.monotonic() > silent_until:
                    yield {"error": f"no answer from the inference worker in {timeout_s:g} s: is a worker serving "
                                    "the infer queue running?"}
                    return
                yield None
                continue
            event = json.loads(popped[1])
            yield event
            if "end" in event or "error" in event:
                return
            silent_until = time.monotonic() + timeout_s
    finally:
        client.delete(key, owner_key(request_id))
