"""Serving on queue `infer`: one base model loaded per worker process, many adapters hot-swapped on it, requests
batched into one forward pass per step (protocol in webapp.serving.protocol).

A worker process keeps SERVE_BASE_CACHE bases loaded (an LRU; one by default) and, on each, an LRU of up to
SERVE_ADAPTER_CACHE adapters in a `trainer.multi_lora.AdapterSet`: a request for an adapter already loaded loads
nothing, and a new one is copied from storage and added as a slot (never a model copy). The task `workers.serve`
takes the requests waiting for its base within SERVE_BATCH_WINDOW_MS and generates all their rows together
(`trainer.batch_generation`), each row with its own adapter (or none), sampling settings, seed and stop strings;
a request's events are pushed as its tokens come, and its `end` as soon as its own rows are done.
Every worker serving INFER_QUEUE announces itself in Redis from its main process, so /v1 can answer 503 at once
when none is running.
"""
from __future__ import annotations

import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

from celery.signals import worker_ready, worker_shutdown
from django.conf import settings

from webapp.jobs.queue import SERVE_TASK
from workers.celery_app import app
from workers.inference_tasks import DEVICE, ModelCache, free_memory, still_loading


class Engine:
    """A base model, its tokenizer, and the adapters loaded on it (LRU of at most SERVE_ADAPTER_CACHE)."""

    def __init__(self, base: str):
        from trainer.models import load_model
        from trainer.multi_lora import AdapterSet

        self.model, self.tokenizer = load_model(base, "causal-lm", device=DEVICE)
        self.model.eval()
        self.adapters = AdapterSet(self.model)
        self.tokenizers: OrderedDict[str, object] = OrderedDict()  # adapter storage folder -> its tokenizer
        self.loads = self.hits = 0

    def load_adapter(self, folder: str, keep: set[str]) -> None:
        """Make the adapter in storage folder `folder` servable; evicts least recently used ones not in `keep`."""
        from trainer.inference import adapter_tokenizer
        from webapp.results.artifacts import copy_to_folder

        if folder in self.tokenizers:
            self.tokenizers.move_to_end(folder)
            self.hits += 1
        else:
            with tempfile.TemporaryDirectory(prefix="loraworks-serve-") as scratch:
                local = copy_to_folder(folder, Path(scratch))
                self.adapters.add(folder, local)
                self.tokenizers[folder] = adapter_tokenizer(local) or self.tokenizer
            self.loads += 1
        # A batch may hold more adapters than the cache: those wait for a later call to be evicted.
        evictable = [name for name in self.tokenizers if name not in keep]
        while len(self.tokenizers) > settings.SERVE_ADAPTER_CACHE and evictable:
            name = evictable.pop(0)
            self.adapters.remove(name)
            del self.tokenizers[name]

    def tokenizer_for(self, adapter: str | None):
        return self.tokenizer if adapter is None else self.tokenizers[adapter]


ENGINES = ModelCache(lambda: settings.SERVE_BASE_CACHE)


def prompt_for(layout: str, prompt, tokenizer) -> str | list[dict]:
    """The prompt laid out as the job's training data was (alpaca, prompt/completion, chat), so the fine-tuned
    model sees what it learned to answer. Chat goes as messages (layout "messages": the caller's conversation;
    "chat": one text as the user's message), rendered by the tokenizer's chat template or, when it has none, by
    the default template training used (`ensure_chat_template`), with no BOS added. "text" is taken as it is."""
    from trainer.data.render import ensure_chat_template, segments

    if layout in ("messages", "chat"):
        ensure_chat_template(tokenizer)
        return prompt if layout == "messages" else [{"role": "user", "content": prompt}]
    placeholder = "\x00"
    examples = {"alpaca": {"instruction": prompt, "input": "", "output": placeholder},
                "prompt_completion": {"prompt": prompt, "completion": placeholder}}
    if layout not in examples:
        return prompt
    laid_out = []
    for text, counts in segments(examples[layout], layout, tokenizer):
        if counts:
            break
        laid_out.append(text)
    return "".join(laid_out)


def _generation_row(engine: Engine, spec: dict):
    from trainer.batch_generation import Row
    from trainer.inference import DEFAULT_MAX_PROMPT_TOKENS, _eos_ids, prompt_ids, prompt_text

    tokenizer = engine.tokenizer_for(spec["adapter"])
    prompt = prompt_for(spec["layout"], spec["prompt"], tokenizer)
    ids = prompt_ids(tokenizer, prompt, DEFAULT_MAX_PROMPT_TOKENS)
    sampling = {key: spec["sampling"][key] for key in ("temperature", "top_p", "max_new_tokens", "seed")
                if key in spec["sampling"]}
    row = Row(ids=ids, adapter=spec["adapter"], eos_ids=_eos_ids(engine.model, tokenizer), **sampling)
    row.check()
    return row, tokenizer, prompt_text(tokenizer, prompt)


def _error_message(error: Exception) -> str:
    if isinstance(error, FileNotFoundError):
        return f"this job's model files are missing from storage ({error}); train it again"
    return str(error)


def serve_batch(base: str, requests: list[dict], publish) -> dict:
    """Answer `requests` (all for `base`) together; `publish(request_id, event)`. Returns the batch's stats."""
    from trainer.batch_generation import TextStream, generate_rows
    from trainer.errors import TrainerError

    with still_loading(lambda event: [publish(r["id"], event) for r in requests]):
        engine, base_loaded_now = ENGINES.get(base, lambda: Engine(base))
        keep = {row["adapter"] for r in requests for row in r["rows"] if row["adapter"]}
        rows, owners, streams, ready = [], [], [], []
        for request in requests:
            try:
                for folder in {row["adapter"] for row in request["rows"] if row["adapter"]}:
                    engine.load_adapter(folder, keep)
                built = [_generation_row(engine, spec) for spec in request["rows"]]
            except (TrainerError, FileNotFoundError) as error:
                publish(request["id"], {"error": _error_message(error)})
                continue
            ready.append(request)
            for spec, (row, tokenizer, shown) in zip(request["rows"], built):
                publish(request["id"], {"side": spec["side"], "prompt": shown})  # what this row's model is given
                rows.append(row)
                owners.append((request["id"], spec["side"]))
                streams.append(TextStream(tokenizer, spec.get("stop")))
    stats = {"pid": os.getpid(), "base_loads": ENGINES.loads, "base_loaded_now": base_loaded_now,
             "adapter_loads": engine.loads,
             "adapter_hits": engine.hits, "adapters_loaded": len(engine.tokenizers), "batch_rows": len(rows),
             "batch_requests": len(ready)}
    if not rows:
        return stats
    for request in ready:
        publish(request["id"], {"status": "generating"})
    left = {request["id"]: len(request["rows"]) for request in ready}
    reported = [False] * len(rows)

    def report_finished():
        for i, row in enumerate(rows):
            if row.finish_reason is None or reported[i]:
                continue
            reported[i] = True
            request_id, side = owners[i]
            rest = streams[i].finish()
            if rest:
                publish(request_id, {"side": side, "text": rest})
            publish(request_id, {"side": side, "done": True, "finish_reason": row.finish_reason,
                                 "usage": {"prompt_tokens": len(row.ids), "completion_tokens": row.generated}})
            left[request_id] -= 1
            if left[request_id] == 0:
                publish(request_id, {"end": True, "stats": stats})

    pad_id = engine.tokenizer.pad_token_id or 0
    for step in generate_rows(engine.model, engine.adapters, rows, pad_id=pad_id):
        for i, token in step:
            piece = streams[i].feed(token)
            if piece:
                publish(owners[i][0], {"side": owners[i][1], "text": piece})
            if streams[i].stopped:
                rows[i].finish_reason = "stop"  # generate_rows leaves a finished row alone from the next step
        report_finished()
    report_finished()
    return stats


@app.task(name=SERVE_TASK)
def serve(base: str) -> dict:
    """Celery entry point: take the requests waiting for `base` and answer them as one batch."""
    from webapp.serving.protocol import push, redis_client, take_batch

    client = redis_client()
    requests = take_batch(client, base, settings.SERVE_MAX_BATCH, settings.SERVE_BATCH_WINDOW_MS / 1000)
    if not requests:
        return {"batch_requests": 0}

    def publish(request_id: str, event: dict) -> None:
        push(client, request_id, event)

    try:
        return serve_batch(base, requests, publish)
    except Exception as error:
        from trainer.errors import TrainerError

        message = (_error_message(error) if isinstance(error, (TrainerError, FileNotFoundError))
                   else "the inference worker failed on this request; see its log")
        for request in requests:
            publish(request["id"], {"error": message})
        free_memory()
        if message.startswith("the inference worker failed"):
            raise
        return {"error": message}


class _Announcer:
    """From the worker's main process: tell Redis every few seconds which serving queues this worker consumes."""

    def __init__(self):
        self.stop = threading.Event()
        self.queues: list[str] = []
        self.name = ""

    def start(self, consumer) -> None:
        from webapp.serving.protocol import ANNOUNCE_EVERY_S, announce, redis_client

        self.name = consumer.hostname
        self.queues = [name for name in consumer.app.amqp.queues.consume_from if name == settings.INFER_QUEUE]
        if not self.queues:
            return

        def loop():
            client = redis_client()
            while True:
                try:
                    for queue in self.queues:
                        announce(client, queue, self.name)
                except Exception:  # Redis down: retry at the next beat; the worker itself reports the outage
                    pass
                if self.stop.wait(ANNOUNCE_EVERY_S):
                    return

        threading.Thread(target=loop, name="serving-announcer", daemon=True).start()

    def withdraw(self) -> None:
        from webapp.serving.protocol import redis_client, withdraw

        self.stop.set()
        try:
            for queue in self.queues:
                withdraw(redis_client(), queue, self.name)
        except Exception:  # best effort: the announcement expires on its own
            pass


ANNOUNCER = _Announcer()


@worker_ready.connect
def _announce_serving(sender=None, **_):
    ANNOUNCER.start(sender)


@worker_shutdown.connect
def _withdraw_serving(**_):
    ANNOUNCER.withdraw()
