"""The /v1 endpoints: GET /v1/models, POST /v1/chat/completions and POST /v1/completions, in OpenAI's shapes.

A completion request becomes a one-row serving request (webapp.serving.protocol) on INFER_QUEUE; the answer is
relayed from the worker's Redis events, whole or as server-sent events in OpenAI's chunk format ending with
`data: [DONE]`. No worker serving the queue is a 503 at once; a worker silent for PLAYGROUND_STREAM_TIMEOUT_S is
a 503 too (or an error event, once streaming has begun).
"""
from __future__ import annotations

import json
import time

from django.conf import settings
from django.http import JsonResponse, StreamingHttpResponse

from webapp.serving import params, protocol, servable
from webapp.serving.auth import openai_view
from webapp.serving.errors import OpenAIError

SIDE = "answer"
KEEPALIVE_S = 1.0
SHAPES = {"chat": ("chatcmpl-", "chat.completion"), "completion": ("cmpl-", "text_completion")}


@openai_view("GET")
def models(request):
    return JsonResponse({"object": "list", "data": [
        {"id": s.name, "object": "model", "created": s.created, "owned_by": s.owned_by}
        for s in servable.listing(request)]})


@openai_view("POST", rate_limited=True)
def chat_completions(request):
    return _complete(request, "chat")


@openai_view("POST", rate_limited=True)
def completions(request):
    return _complete(request, "completion")


def _complete(request, kind: str):
    body = params.parse_body(request)
    name = params.model_name(body)
    model = servable.resolve(request, name)
    if model is None:
        raise OpenAIError(404, f"The model `{name}` does not exist or you do not have access to it.", "model")
    asked = params.read(body, kind)
    layout, prompt = params.layout_for(asked, model.layout, model.name)
    client = protocol.redis_client()
    if not protocol.workers_alive(client, settings.INFER_QUEUE):
        raise OpenAIError(503, f"no inference worker is serving the {settings.INFER_QUEUE} queue; start one "
                               f"(celery -A workers worker -Q {settings.INFER_QUEUE}) and retry",
                          headers={"Retry-After": "10"})
    request_id = protocol.new_request_id()
    protocol.submit(client, {"id": request_id, "base": model.base, "rows": [
        {"side": SIDE, "adapter": model.adapter, "layout": layout, "prompt": prompt, "sampling": asked.sampling,
         "stop": asked.stop}]})
    shape = Answer(kind, request_id, model.name)
    events = protocol.read_events(client, request_id, float(settings.PLAYGROUND_STREAM_TIMEOUT_S),
                                  wait_s=KEEPALIVE_S)
    if asked.stream:
        response = StreamingHttpResponse(shape.stream(events, asked.include_usage), content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response
    return JsonResponse(shape.whole(events))


class Answer:
    """One request's answer in OpenAI's response shapes, built from the worker's events."""

    def __init__(self, kind: str, request_id: str, model: str):
        prefix, self.object = SHAPES[kind]
        self.kind, self.id, self.model, self.created = kind, prefix + request_id, model, int(time.time())

    def _choice(self, text: str | None, finish_reason: str | None, *, chunk: bool) -> dict:
        if self.kind == "completion":
            return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
        if chunk:
            return {"index": 0, "delta": {} if text is None else {"content": text}, "logprobs": None,
                    "finish_reason": finish_reason}
        return {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                "finish_reason": finish_reason}

    def _envelope(self, *, chunk: bool, **fields) -> dict:
        kind = self.object + (".chunk" if chunk and self.kind == "chat" else "")
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, **fields}

    @staticmethod
    def _usage(usage: dict) -> dict:
        return {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}

    @staticmethod
    def _failure(event: dict) -> OpenAIError:
        silent = event["error"].startswith("no answer from the inference worker")
        return OpenAIError(503 if silent else 500, event["error"])

    def whole(self, events) -> dict:
        text, done = "", None
        for event in events:
            if event is None:
                continue
            if "error" in event:
                raise self._failure(event)
            if event.get("side") == SIDE:
                text += event.get("text", "")
                done = event if event.get("done") else done
        return self._envelope(chunk=False, choices=[self._choice(text, done["finish_reason"], chunk=False)],
                              usage=self._usage(done["usage"]))

    def stream(self, events, include_usage: bool):
        def data(payload) -> str:
            return f"data: {json.dumps(payload)}\n\n"

        if self.kind == "chat":
            opener = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                      "finish_reason": None}
            yield data(self._envelope(chunk=True, choices=[opener]))
        for event in events:
            if event is None:
                yield ": waiting\n\n"  # keeps proxies from closing a quiet stream
                continue
            if "error" in event:
                yield data(self._failure(event).body())
                return
            if event.get("side") != SIDE:
                continue
            if "text" in event:
                yield data(self._envelope(chunk=True, choices=[self._choice(event["text"], None, chunk=True)]))
            elif event.get("done"):
                yield data(self._envelope(chunk=True, choices=[self._choice(None, event["finish_reason"],
                                                                            chunk=True)]))
                if include_usage:
                    yield data(self._envelope(chunk=True, choices=[], usage=self._usage(event["usage"])))
        yield "data: [DONE]\n\n"
