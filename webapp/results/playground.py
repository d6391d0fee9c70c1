"""The playground's protocol, shared by the web views and the `infer` workers: limits, request specs, starting.

A causal-LM job's playground request is a serving request (webapp.serving.protocol) of two rows, the base alone
(side "base") and the base with the job's adapter (side "tuned"), same prompt, settings and seed: the same path,
batching and worker as `/v1`, so the playground's answer is `/v1`'s answer for the same seed. A classification
job's request runs as the task `workers.playground` (workers/inference_tasks.py) with a *spec* of the job.
Either way the worker pushes JSON events onto the Redis list `events_key(request_id)` and the SSE view pops them:

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

from django.conf import settings

from webapp.jobs.queue import PLAYGROUND_TASK, enqueue
from webapp.serving.protocol import (EVENTS_TTL_S, events_key, new_request_id, owner_key, push, read_events,
                                     redis_client, submit)

__all__ = ["EVENTS_TTL_S", "events_key", "new_request_id", "owner_key", "push", "read_events", "redis_client"]
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


def job_spec(job) -> dict:
    """What the worker needs to load a finished job's models (JSON-able; no database access on the worker)."""
    config = (job.metrics or {}).get("config") or job.settings or {}
    data = (job.metrics or {}).get("data") or {}
    artifacts = job.artifacts or {}
    layout = data.get("format") or getattr(job.dataset, "format", "") or "text"
    if data.get("prompt_layout") == "chat":  # preference rows whose prompts are chat turns trained in the template
        layout = "chat"
    return {
        "job_id": job.pk,
        "base": job.base_model.source,
        "task": job.task,
        "format": layout,
        "seed": int(config.get("seed", 0)),
        "adapter": artifacts.get("adapter"),
        "merged": artifacts.get("merged"),
    }


def start(request_id: str, job, text: str, sampling: dict) -> None:
    """Queue the playground request for `job` (a succeeded job of the asking team)."""
    spec = job_spec(job)
    if spec["task"] == "classification":
        enqueue(PLAYGROUND_TASK, (request_id, spec, text, sampling), on=settings.INFER_QUEUE)
        return
    rows = [{"side": side, "adapter": adapter, "layout": spec["format"], "prompt": text, "sampling": sampling,
             "stop": []} for side, adapter in (("base", None), ("tuned", spec["adapter"]))]
    submit(redis_client(), {"id": request_id, "base": spec["base"], "rows": rows})


def collect(client, request_id: str, timeout_s: float) -> dict:
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
