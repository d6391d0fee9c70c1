"""Classification playground on queue `infer`: a job's base model and fine-tuned classifier label the same text;
and the model cache and loading pulses the serving worker (workers/serving_tasks.py, which answers causal-LM
playground requests and /v1) shares.

The protocol (request spec, Redis events, limits) is in webapp.results.playground. Models stay loaded in an
in-process LRU of PLAYGROUND_CACHE_SIZE models, so a repeat request for the same job loads nothing; the infer
worker should run one process (`--concurrency 1`) so that every request finds the same cache.
The fine-tuned model is the merged folder when the job has one (fastest), else the base with the adapter applied
unmerged. Artifacts are copied from storage to a temporary folder for loading, which is removed right after.
"""
from __future__ import annotations

import contextlib
import gc
import json
import os
import sys
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from webapp.jobs.queue import PLAYGROUND_TASK
from workers.celery_app import app

LOADING_PULSE_S = 10.0
DEVICE = "auto"  # the GPU when the worker has one


class ModelCache:
    """Least-recently-used (model, tokenizer) pairs, at most `capacity()` of them; counts loads and hits."""

    def __init__(self, capacity: Callable[[], int]):
        self.capacity = capacity
        self.entries: OrderedDict[tuple, object] = OrderedDict()
        self.loads = self.hits = 0
        self.lock = threading.Lock()

    def get(self, key: tuple, load: Callable[[], object]) -> tuple[object, bool]:
        """(value, loaded now?) for `key`, calling `load` only when it is not cached."""
        with self.lock:
            if key in self.entries:
                self.entries.move_to_end(key)
                self.hits += 1
                return self.entries[key], False
            value = load()
            self.loads += 1
            self.entries[key] = value
            evicted = False
            while len(self.entries) > self.capacity():
                self.entries.popitem(last=False)
                evicted = True
            if evicted:
                free_memory()
            return value, True

    def stats(self) -> dict:
        return {"pid": os.getpid(), "loads": self.loads, "hits": self.hits, "capacity": self.capacity(),
                "cached": [list(key) for key in self.entries]}


def free_memory() -> None:
    gc.collect()  # model graphs hold reference cycles: free their memory now, not later
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()  # give the freed GPU memory back for the next model


def _capacity() -> int:
    from webapp.results.playground import limits

    return limits()["cache_size"]


CACHE = ModelCache(_capacity)


def _label_names(spec: dict) -> list[str] | None:
    """The job's labels in id order, read from the adapter in storage (classification only)."""
    if spec["task"] != "classification":
        return None
    from django.core.files.storage import default_storage

    name = spec["adapter"].rstrip("/") + "/label_mapping.json"
    with default_storage.open(name, "rb") as handle:
        id2label = json.load(handle)["id2label"]
    return [id2label[i] for i in sorted(id2label, key=int)]


def _load_base(spec: dict, labels: list[str] | None):
    import torch

    from trainer.models import load_model

    if labels is not None:
        # The base has no trained head: seeded like training's, its answer is the "before" of the job's eval.
        torch.manual_seed(spec["seed"])
    return load_model(spec["base"], spec["task"], id2label=dict(enumerate(labels)) if labels else None,
                      device=DEVICE)


def _load_tuned(spec: dict):
    from trainer.inference import load_for_inference
    from webapp.results.artifacts import copy_to_folder

    merged = spec.get("merged")
    with tempfile.TemporaryDirectory(prefix="loraworks-infer-") as folder:
        local = copy_to_folder(merged or spec["adapter"], Path(folder))
        if merged:
            return load_for_inference(spec["base"], task=spec["task"], merged_dir=local, device=DEVICE)
        return load_for_inference(spec["base"], task=spec["task"], adapter_dir=local, device=DEVICE)


def models_for(spec: dict) -> tuple[tuple, tuple, list[str]]:
    """((base model, tokenizer), (tuned model, tokenizer), keys loaded by this call)."""
    labels = _label_names(spec)
    base_key = ("base", spec["base"], spec["task"], tuple(labels or ()), spec["seed"] if labels else None)
    tuned_key = ("tuned", spec["job_id"], spec.get("merged") or spec["adapter"])
    base, base_loaded = CACHE.get(base_key, lambda: _load_base(spec, labels))
    tuned, tuned_loaded = CACHE.get(tuned_key, lambda: _load_tuned(spec))
    return base, tuned, [key[0] for key, loaded in ((base_key, base_loaded), (tuned_key, tuned_loaded)) if loaded]




def check_input(text: str, sampling: dict) -> None:
    from trainer.errors import ConfigError
    from webapp.results.playground import limits

    bounds = limits()
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("type a prompt (or a text to classify) first", "prompt")
    if len(text) > bounds["max_prompt_chars"]:
        raise ConfigError(f"the prompt is {len(text)} characters; the playground takes at most "
                          f"{bounds['max_prompt_chars']}", "prompt")
    if sampling.get("max_new_tokens", 0) > bounds["max_new_tokens"]:
        raise ConfigError(f"max new tokens is at most {bounds['max_new_tokens']} in the playground",
                          "max_new_tokens")


@contextlib.contextmanager
def still_loading(publish: Callable[[dict], None]):
    """Publish {"status": "loading"} now and every LOADING_PULSE_S until the block ends, so a long first load
    (a big model, or the demo model being built) is not taken for a dead worker by the waiting stream."""
    done = threading.Event()

    def pulse():
        while not done.wait(LOADING_PULSE_S):
            publish({"status": "loading"})

    publish({"status": "loading"})
    thread = threading.Thread(target=pulse, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def run_playground(spec: dict, text: str, sampling: dict, publish: Callable[[dict], None]) -> dict:
    """Classify `text` with both models, publishing events; returns the cache stats (with `loaded_now`)."""
    from trainer.errors import ConfigError
    from trainer.inference import classify

    if spec["task"] != "classification":
        raise ConfigError("causal-LM playground requests are served by workers.serve (the /v1 path)", "job")
    check_input(text, sampling)
    with still_loading(publish):
        (base, base_tokenizer), (tuned, tuned_tokenizer), loaded = models_for(spec)
    publish({"status": "generating"})
    for side, model, tokenizer in (("base", base, base_tokenizer), ("tuned", tuned, tuned_tokenizer)):
        publish({"side": side, "probs": classify(model, tokenizer, text)})
        publish({"side": side, "done": True})
    return {**CACHE.stats(), "loaded_now": loaded}


@app.task(name=PLAYGROUND_TASK)
def playground(request_id: str, spec: dict, text: str, sampling: dict) -> dict:
    """Celery entry point: run_playground with events pushed to Redis; errors become an `error` event."""
    from trainer.errors import TrainerError
    from webapp.results.playground import push, redis_client

    client = redis_client()
    try:
        stats = run_playground(spec, text, sampling, lambda event: push(client, request_id, event))
    except TrainerError as error:
        push(client, request_id, {"error": str(error)})
        return {**CACHE.stats(), "error": str(error)}
    except FileNotFoundError as error:
        message = f"this job's model files are missing from storage ({error}); train it again"
        push(client, request_id, {"error": message})
        return {**CACHE.stats(), "error": message}
    except Exception:
        push(client, request_id, {"error": "the inference worker failed on this request; see its log"})
        raise
    push(client, request_id, {"end": True, "stats": stats})
    return stats
