"""Reading a /v1 completion request: OpenAI's parameters checked one by one, each problem a 400 naming its param.

Taken: model, messages (chat) or prompt (completions), max_tokens (or max_completion_tokens), temperature, top_p,
stop, seed, stream, stream_options.include_usage, n (1 only), user (ignored), frequency_penalty and
presence_penalty at 0. Anything else is refused by name rather than silently ignored.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass

from django.conf import settings

from webapp.api.decorators import read_json
from webapp.api.errors import ApiError
from webapp.serving.errors import OpenAIError

COMMON = {"model", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "seed", "stream",
          "stream_options", "n", "user", "frequency_penalty", "presence_penalty"}
ROLES = ("system", "user", "assistant")
MAX_STOPS = 4
DEFAULT_MAX_TOKENS = {"chat": 128, "completion": 16}  # OpenAI's completions default is 16 tokens


@dataclass
class CompletionRequest:
    model: str
    prompt: str | list[dict]   # one text (completions) or the chat messages
    sampling: dict             # temperature, top_p, max_new_tokens, seed
    stop: list[str]
    stream: bool
    include_usage: bool


def parse_body(request) -> dict:
    """The request's JSON object body, or a 400/413 OpenAIError saying what is wrong with it."""
    try:
        return read_json(request)
    except ApiError as error:
        raise OpenAIError(error.status, error.message) from None


def _number(body: dict, name: str, default: float, low: float, high: float, *, low_open: bool = False) -> float:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OpenAIError(400, f"{name} must be a number", name)
    if value > high or value < low or (low_open and value == low):
        raise OpenAIError(400, f"{name} must be {'above' if low_open else 'at least'} {low:g} and at most "
                               f"{high:g}; got {value}", name)
    return float(value)


def _integer(body: dict, name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise OpenAIError(400, f"{name} must be a whole number", name)
    if not low <= value <= high:
        raise OpenAIError(400, f"{name} must be between {low} and {high}; got {value}", name)
    return value


def _stop(body: dict) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise OpenAIError(400, "stop must be a non-empty string or a list of them", "stop")
    if len(stops) > MAX_STOPS:
        raise OpenAIError(400, f"stop takes at most {MAX_STOPS} sequences; got {len(stops)}", "stop")
    return stops


def _messages(body: dict) -> list[dict]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise OpenAIError(400, "messages must be a non-empty list of {role, content}", "messages")
    cleaned = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise OpenAIError(400, f"{where}.role must be one of {', '.join(ROLES)}", f"{where}.role")
        content = message.get("content")
        if isinstance(content, list):  # content parts: only text ones
            if not all(isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
                       for part in content):
                raise OpenAIError(400, f"{where}.content: only text parts are supported", f"{where}.content")
            content = "".join(part["text"] for part in content)
        if not isinstance(content, str):
            raise OpenAIError(400, f"{where}.content must be a string", f"{where}.content")
        cleaned.append({"role": message["role"], "content": content})
    if cleaned[-1]["role"] == "assistant":
        raise OpenAIError(400, "the last message must not be the assistant's: it is what the model answers",
                          "messages")
    return cleaned


def _prompt(body: dict) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if isinstance(prompt, list):
        raise OpenAIError(400, "prompt: send one text per request (batches of prompts are not supported)", "prompt")
    if not isinstance(prompt, str) or not prompt:
        raise OpenAIError(400, "prompt must be a non-empty string", "prompt")
    return prompt


def model_name(body: dict) -> str:
    """The model asked for; checked first, so another team's model is a 404 whatever else the body holds."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise OpenAIError(400, "model is required: a name from GET /v1/models, such as job-12", "model")
    return model


def read(body: dict, kind: str) -> CompletionRequest:
    """The request of `kind` ("chat" or "completion") in `body`, or a 400 OpenAIError naming the bad param."""
    allowed = COMMON | ({"messages"} if kind == "chat" else {"prompt"})
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise OpenAIError(400, f"unrecognized request argument: {unknown[0]} (this server takes "
                               f"{', '.join(sorted(allowed))})", unknown[0])
    model = model_name(body)
    for name in ("frequency_penalty", "presence_penalty"):
        if body.get(name) not in (None, 0, 0.0):
            raise OpenAIError(400, f"{name} is not supported (only 0)", name)
    if body.get("n") not in (None, 1):
        raise OpenAIError(400, "n must be 1: one answer per request", "n")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise OpenAIError(400, "stream must be true or false", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict) or set(options) - {"include_usage"}:
        raise OpenAIError(400, "stream_options takes only include_usage", "stream_options")
    prompt = _messages(body) if kind == "chat" else _prompt(body)
    size = sum(len(m["content"]) for m in prompt) if kind == "chat" else len(prompt)
    if size > settings.PLAYGROUND_MAX_PROMPT_CHARS:
        param = "messages" if kind == "chat" else "prompt"
        raise OpenAIError(400, f"{param} is {size} characters; at most {settings.PLAYGROUND_MAX_PROMPT_CHARS}",
                          param)
    limit = settings.PLAYGROUND_MAX_NEW_TOKENS
    max_tokens = _integer(body, "max_completion_tokens", 1, limit)
    max_tokens = _integer(body, "max_tokens", 1, limit) if max_tokens is None else max_tokens
    seed = _integer(body, "seed", 0, 2**63 - 1)
    sampling = {"temperature": _number(body, "temperature", 1.0, 0, 2),
                "top_p": _number(body, "top_p", 1.0, 0, 1, low_open=True),
                "max_new_tokens": max_tokens or min(DEFAULT_MAX_TOKENS[kind], limit),
                "seed": secrets.randbelow(2**31) if seed is None else seed}
    return CompletionRequest(model, prompt, sampling, _stop(body), stream, bool(options.get("include_usage")))


def layout_for(request: CompletionRequest, job_format: str | None, model: str) -> tuple[str, str | list[dict]]:
    """(layout, prompt) of the row the worker runs (webapp.serving.protocol).

    Chat goes through the model's own chat template (the one its job trained with) when the job was trained on
    chat rows, or for a base model. A job trained on single prompts (alpaca, prompt/completion, plain text) gets
    the one user message laid out as its training rows were, exactly as the playground lays out its prompt."""
    if isinstance(request.prompt, str):
        return "text", request.prompt
    if job_format in (None, "chat"):
        return "messages", request.prompt
    if len(request.prompt) != 1 or request.prompt[0]["role"] != "user":
        raise OpenAIError(400, f"{model} was trained on {job_format} rows (one prompt, one answer): send exactly "
                               "one user message, or use /v1/completions", "messages")
    return job_format, request.prompt[0]["content"]
