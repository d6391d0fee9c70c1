"""The playground's protocol, shared by the web views and the `infer` worker: limits, request specs, events.

A request runs as the task `workers.playground` with a request id, a *spec* of the job (what the worker needs to
find its models: base model source, task, data format, storage folders of the adapter and merged model) and the
sampling settings. The worker pushes JSON events onto the Redis list `events_key(request_id)`; the SSE view pops
them in order (a list, not pub/sub, so nothing is lost if the view starts reading after the worker has begun):

    {"status": "loading" | "generating"}
    {"side": "base" | "tuned", "prompt": "..."}      the text that side's model is given (its chat template's)
    {"side": "base" | "tuned", "text": "..."}        a piece of generated text, in order
    {"side": "base" | "tuned", "probs": {label: p}}  classification
    {"side": "base" | "tuned", "done": true}         that side has finished
    {"error": "..."}                                 a message a person can act on; the last event
    {"end": true, "stats": {...}}                    the last event; stats of the worker's model cache

`owner_key(request_id)` holds the id of the team that asked, so only that team can read the stream.
"""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import redis
from django.conf import settings

from webapp.jobs.queue import PLAYGROUND_TASK, enqueue

EVENTS_TTL_S = 600
SIDES = ("base", "tuned")


class PlaygroundFailed(Exception):
    """The worker reported an error, or stayed silent too long; the message is for a person."""


def limits() -> dict:
    """The configured bounds (settings.py reads them from the environment): models an infer worker process keeps
    loaded, the biggest request, and how long the stream waits for the worker's next event before giving up."""
    return {
        "cache_size": settings.PLAYGROUND_CACHE_SIZE,
        "max_prompt_chars": settings.PLAYGROUND_MAX_PROMPT_CHARS,
        "max_new_tokens": settings.PLAYGROUND_MAX_NEW_TOKENS,
        "stream_timeout_s": float(settings.PLAYGROUND_STREAM_TIMEOUT_S),
    }


def start(request_id: str, spec: dict, text: str, sampling: dict) -> None:
    """Enqueue the request on the `infer` queue, by task name (the web process never imports the task)."""
    enqueue(PLAYGROUND_TASK, (request_id, spec, text, sampling), on="infer")


def new_request_id() -> str:
    return uuid.uuid4().hex


def events_key(request_id: str) -> str:
    return f"playground:{request_id}:events"


def owner_key(request_id: str) -> str:
    return f"playground:{request_id}:team"


def redis_client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


def push(client: redis.Redis, request_id: str, event: dict) -> None:
    key = events_key(request_id)
    client.pipeline().rpush(key, json.dumps(event)).expire(key, EVENTS_TTL_S).execute()


def job_spec(job) -> dict:
    """What the worker needs to load a finished job's models (JSON-able; no database access on the worker)."""
    config = (job.metrics or {}).get("config") or job.settings or {}
    data = (job.metrics or {}).get("data") or {}
    artifacts = job.artifacts or {}
    return {
        "job_id": job.pk,
        "base": job.base_model.source,
        "task": job.task,
        "format": data.get("format") or getattr(job.dataset, "format", "") or "text",
        "seed": int(config.get("seed", 0)),
        "adapter": artifacts.get("adapter"),
        "merged": artifacts.get("merged"),
    }


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


def collect(client: redis.Redis, request_id: str, timeout_s: float) -> dict:
    """Wait for the whole answer: {side: {"text": ..., "probs": {label: p} or None}}; raises PlaygroundFailed."""
    answers = {side: {"text": "", "probs": None} for side in SIDES}
    for event in read_events(client, request_id, timeout_s):
        if event is None:
            continue
        if "error" in event:
            raise PlaygroundFailed(event["error"])
        if event.get("side") in answers:
            answers[event["side"]]["text"] += event.get("text", "")
            answers[event["side"]]["probs"] = event.get("probs", answers[event["side"]]["probs"])
    return answers
