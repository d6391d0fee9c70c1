"""The playground's inference: model cache, prompt layout, base and fine-tuned answers, limits and errors.

These run the task code in-process on tiny models (the end-to-end run through a real worker is in
tests/webapp/test_playground.py).
"""
import itertools
import json
import uuid
from pathlib import Path

import pytest


import finished_jobs
from trainer.data.render import DEFAULT_CHAT_TEMPLATE, segments
from trainer.inference import prompt_ids
from workers import inference_tasks
from workers.inference_tasks import ModelCache


@pytest.fixture
def fresh_cache(monkeypatch):
    cache = ModelCache(lambda: 4)
    monkeypatch.setattr(inference_tasks, "CACHE", cache)
    return cache


@pytest.fixture
def stored(settings):
    """upload(run, merged=...) -> the run's spec for the worker, its artifacts under a fresh job id in storage."""
    from django.core.files.storage import default_storage

    uploaded = []

    def upload(run: Path, *, use_merged: bool = False, fmt: str = "alpaca") -> dict:
        job_id = uuid.uuid4().int % 10**9
        artifacts = finished_jobs.upload(run, job_id)
        uploaded.append(job_id)
        metrics = finished_jobs.metrics_of(run)
        return {"job_id": job_id, "base": str(run / "base"), "task": metrics["task"], "format": fmt, "seed": 0,
                "adapter": artifacts["adapter"], "merged": artifacts["merged"] if use_merged else None}

    yield upload
    for job_id in uploaded:
        for _, name in __import__("webapp.results.artifacts", fromlist=["walk"]).walk(f"jobs/{job_id}"):
            default_storage.delete(name)


GREEDY = {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 12, "seed": 0}


def collect(spec: dict, text: str, sampling: dict) -> tuple[list[dict], dict]:
    events = []
    stats = inference_tasks.run_playground(spec, text, sampling, events.append)
    return events, stats


def joined(events: list[dict], side: str) -> str:
    return "".join(e["text"] for e in events if e.get("side") == side and "text" in e)


def test_the_model_cache_evicts_the_least_recently_used_model():
    cache = ModelCache(lambda: 2)
    calls = []

    def loader(name):
        return lambda: calls.append(name) or name

    assert cache.get(("a",), loader("a")) == ("a", True)
    assert cache.get(("b",), loader("b")) == ("b", True)
    assert cache.get(("a",), loader("a")) == ("a", False)  # a is now the most recent
    cache.get(("c",), loader("c"))  # evicts b
    assert list(cache.entries) == [("a",), ("c",)]
    assert cache.get(("b",), loader("b")) == ("b", True)
    assert calls == ["a", "b", "c", "b"]
    assert (cache.loads, cache.hits) == (4, 1)


def test_the_cache_size_comes_from_the_playground_cache_size_setting(settings):
    settings.PLAYGROUND_CACHE_SIZE = 1
    cache = ModelCache(inference_tasks._capacity)
    cache.get(("a",), lambda: "a")
    cache.get(("b",), lambda: "b")
    assert list(cache.entries) == [("b",)] and cache.stats()["capacity"] == 1


def test_prompts_are_laid_out_like_the_training_data(merged_llama_run):
    from trainer.models import load_tokenizer

    tokenizer = load_tokenizer(merged_llama_run / "base")
    plain = load_tokenizer(merged_llama_run / "base")
    plain.chat_template = None
    assert inference_tasks.prompt_for({"format": "alpaca"}, "Name a color", tokenizer) == (
        "### Instruction:\nName a color\n\n### Response:\n")
    assert inference_tasks.prompt_for({"format": "prompt_completion"}, "2+2=", tokenizer) == "2+2= "
    assert inference_tasks.prompt_for({"format": "text"}, "Once upon", tokenizer) == "Once upon"
    assert inference_tasks.prompt_for({"format": "chat"}, "Hi", tokenizer) == [{"role": "user", "content": "Hi"}]
    # No template of its own: the default one training used, so the prompt's tokens are the training rows' own.
    assert inference_tasks.prompt_for({"format": "chat"}, "Hi", plain) == [{"role": "user", "content": "Hi"}]
    assert plain.chat_template == DEFAULT_CHAT_TEMPLATE
    row = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    trained_prompt = "".join(text for text, _ in itertools.takewhile(lambda seg: not seg[1],
                                                                       segments(row, "chat", plain)))
    assert prompt_ids(plain, [{"role": "user", "content": "Hi"}], 100) == plain(
        trained_prompt, add_special_tokens=False)["input_ids"]


def test_base_and_fine_tuned_answers_stream_what_generate_gives_and_a_repeat_loads_nothing(
        merged_llama_run, stored, fresh_cache):
    from trainer.inference import generate, load_for_inference

    spec = stored(merged_llama_run)
    sampling = {"temperature": 0.8, "top_p": 0.9, "max_new_tokens": 12, "seed": 3}
    events, stats = collect(spec, "Name a color", sampling)

    prompt = "### Instruction:\nName a color\n\n### Response:\n"
    base = load_for_inference(str(merged_llama_run / "base"), task="causal-lm")
    tuned = load_for_inference(str(merged_llama_run / "base"), task="causal-lm",
                               adapter_dir=merged_llama_run / "out" / "adapter")
    assert joined(events, "base") == generate(*base, prompt, **sampling)
    assert joined(events, "tuned") == generate(*tuned, prompt, **sampling)
    assert joined(events, "base") != joined(events, "tuned")
    assert events[0] == {"status": "loading"} and events[1] == {"status": "generating"}
    assert [e["side"] for e in events if e.get("done")] and sorted(
        e["side"] for e in events if e.get("done")) == ["base", "tuned"]
    assert stats["loaded_now"] == ["base", "tuned"] and stats["loads"] == 2

    again, stats = collect(spec, "Name a color", sampling)
    assert stats["loaded_now"] == [] and (stats["loads"], stats["hits"]) == (2, 2)
    assert joined(again, "tuned") == joined(events, "tuned")


def test_each_side_is_shown_the_prompt_its_model_is_given_in_its_own_chat_template(merged_llama_run, stored,
                                                                                  fresh_cache):
    from trainer.inference import adapter_tokenizer
    from trainer.models import load_tokenizer

    events, _ = collect(stored(merged_llama_run, fmt="chat"), "Name a color", GREEDY)
    shown = {e["side"]: e["prompt"] for e in events if "prompt" in e}
    message = [{"role": "user", "content": "Name a color"}]
    base_tokenizer = load_tokenizer(merged_llama_run / "base")
    tuned_tokenizer = adapter_tokenizer(merged_llama_run / "out" / "adapter") or base_tokenizer
    assert shown == {"base": base_tokenizer.apply_chat_template(message, tokenize=False, add_generation_prompt=True),
                     "tuned": tuned_tokenizer.apply_chat_template(message, tokenize=False,
                                                                  add_generation_prompt=True)}
    assert shown["base"] == "<|user|>\nName a color\n<|assistant|>\n"  # the base folder's own template
    first_text = next(i for i, e in enumerate(events) if "text" in e)
    assert max(i for i, e in enumerate(events) if "prompt" in e) < first_text


def test_base_and_tuned_pieces_are_interleaved_so_both_columns_fill_together(merged_llama_run, stored, fresh_cache):
    events, _ = collect(stored(merged_llama_run), "Say", GREEDY)
    sides = [e["side"] for e in events if "text" in e]
    assert sides[:2] in (["base", "tuned"], ["tuned", "base"]) and set(sides[:4]) == {"base", "tuned"}


def test_the_merged_model_answers_like_the_unmerged_adapter(merged_llama_run, stored, fresh_cache):
    unmerged, _ = collect(stored(merged_llama_run), "Name a color", GREEDY)
    merged, stats = collect(stored(merged_llama_run, use_merged=True), "Name a color", GREEDY)
    assert stats["cached"][-1][2].endswith("/merged/")
    assert joined(merged, "tuned") == joined(unmerged, "tuned") != ""


def test_a_long_load_keeps_telling_the_stream_it_is_loading(merged_llama_run, stored, fresh_cache, monkeypatch):
    import time

    real = inference_tasks.models_for
    monkeypatch.setattr(inference_tasks, "LOADING_PULSE_S", 0.1)
    monkeypatch.setattr(inference_tasks, "models_for", lambda spec: time.sleep(0.45) or real(spec))
    events, _ = collect(stored(merged_llama_run), "Say", GREEDY)
    statuses = [e["status"] for e in events if "status" in e]
    assert statuses.count("loading") >= 4 and statuses[-1] == "generating"
    assert events.index({"status": "generating"}) == len(statuses) - 1  # no pulse after loading ended


def test_classification_gives_label_probabilities_for_base_and_fine_tuned(bert_run, stored, fresh_cache):
    from trainer.inference import classify, load_for_inference

    spec = stored(bert_run, fmt="classification")
    events, _ = collect(spec, "my invoice is wrong", GREEDY)
    probs = {e["side"]: e["probs"] for e in events if "probs" in e}
    assert set(probs) == {"base", "tuned"}
    for side in probs:
        assert set(probs[side]) == set(finished_jobs.tiny_models.LABELS)
        assert sum(probs[side].values()) == pytest.approx(1.0)
    tuned = load_for_inference(str(bert_run / "base"), adapter_dir=bert_run / "out" / "adapter")
    assert probs["tuned"] == pytest.approx(classify(*tuned, "my invoice is wrong"))
    assert probs["base"] != pytest.approx(probs["tuned"])


def test_a_prompt_over_the_limit_is_refused_with_a_clear_message(merged_llama_run, stored, fresh_cache, settings):
    from trainer.errors import ConfigError

    settings.PLAYGROUND_MAX_PROMPT_CHARS = 10
    settings.PLAYGROUND_MAX_NEW_TOKENS = 5
    with pytest.raises(ConfigError, match="the prompt is 11 characters; the playground takes at most 10"):
        collect(stored(merged_llama_run), "x" * 11, GREEDY)
    with pytest.raises(ConfigError, match="max new tokens is at most 5"):
        collect(stored(merged_llama_run), "short", GREEDY)
    assert fresh_cache.loads == 0


def test_the_task_reports_missing_model_files_as_an_error_event(merged_llama_run, fresh_cache):
    from webapp.results.playground import events_key, redis_client

    spec = {"job_id": 1, "base": str(merged_llama_run / "base"), "task": "causal-lm", "format": "text", "seed": 0,
            "adapter": f"jobs/missing-{uuid.uuid4().hex}/adapter/", "merged": None}
    request_id = uuid.uuid4().hex
    result = inference_tasks.playground(request_id, spec, "hello", GREEDY)
    client = redis_client()
    events = [json.loads(raw) for raw in client.lrange(events_key(request_id), 0, -1)]
    client.delete(events_key(request_id))
    assert "error" in result and events[-1]["error"] == result["error"]
    assert result["error"].startswith("this job's model files are missing from storage")
