"""The classification playground's inference: model cache, base and fine-tuned labels, limits and errors
(causal-LM playground requests go through the serving worker: tests/workers/test_serving_tasks.py).

These run the task code in-process on tiny models (the end-to-end run through a real worker is in
tests/webapp/test_playground.py).
"""
import json
import uuid

import pytest

import finished_jobs
from workers import inference_tasks
from workers.inference_tasks import ModelCache


@pytest.fixture
def fresh_cache(monkeypatch):
    cache = ModelCache(lambda: 4)
    monkeypatch.setattr(inference_tasks, "CACHE", cache)
    return cache


GREEDY = {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 12, "seed": 0}


def collect(spec: dict, text: str, sampling: dict) -> tuple[list[dict], dict]:
    events = []
    stats = inference_tasks.run_playground(spec, text, sampling, events.append)
    return events, stats


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


def test_a_long_load_keeps_telling_the_stream_it_is_loading(bert_run, stored, fresh_cache, monkeypatch):
    import time

    real = inference_tasks.models_for
    monkeypatch.setattr(inference_tasks, "LOADING_PULSE_S", 0.1)
    monkeypatch.setattr(inference_tasks, "models_for", lambda spec: time.sleep(0.45) or real(spec))
    events, _ = collect(stored(bert_run, fmt="classification"), "Say", GREEDY)
    statuses = [e["status"] for e in events if "status" in e]
    assert statuses.count("loading") >= 4 and statuses[-1] == "generating"
    assert events.index({"status": "generating"}) == len(statuses) - 1  # no pulse after loading ended


def test_classification_gives_label_probabilities_for_base_and_fine_tuned(bert_run, stored, fresh_cache):
    from trainer.inference import classify, load_for_inference

    spec = stored(bert_run, fmt="classification")
    events, stats = collect(spec, "my invoice is wrong", GREEDY)
    assert stats["loaded_now"] == ["base", "tuned"]
    probs = {e["side"]: e["probs"] for e in events if "probs" in e}
    assert set(probs) == {"base", "tuned"}
    for side in probs:
        assert set(probs[side]) == set(finished_jobs.tiny_models.LABELS)
        assert sum(probs[side].values()) == pytest.approx(1.0)
    tuned = load_for_inference(str(bert_run / "base"), adapter_dir=bert_run / "out" / "adapter")
    assert probs["tuned"] == pytest.approx(classify(*tuned, "my invoice is wrong"))
    assert probs["base"] != pytest.approx(probs["tuned"])
    again, stats = collect(spec, "my invoice is wrong", GREEDY)
    assert stats["loaded_now"] == [] and stats["hits"] == 2  # a repeat request loads nothing
    assert {e["side"]: e["probs"] for e in again if "probs" in e} == probs


def test_a_text_over_the_limit_is_refused_with_a_clear_message(bert_run, stored, fresh_cache, settings):
    from trainer.errors import ConfigError

    settings.PLAYGROUND_MAX_PROMPT_CHARS = 10
    settings.PLAYGROUND_MAX_NEW_TOKENS = 5
    with pytest.raises(ConfigError, match="the prompt is 11 characters; the playground takes at most 10"):
        collect(stored(bert_run, fmt="classification"), "x" * 11, GREEDY)
    with pytest.raises(ConfigError, match="max new tokens is at most 5"):
        collect(stored(bert_run, fmt="classification"), "short", GREEDY)
    assert fresh_cache.loads == 0


def test_the_task_reports_missing_model_files_as_an_error_event(bert_run, fresh_cache):
    from webapp.results.playground import events_key, redis_client

    spec = {"job_id": 1, "base": str(bert_run / "base"), "task": "classification", "format": "classification",
            "seed": 0,
            "adapter": f"jobs/missing-{uuid.uuid4().hex}/adapter/", "merged": None}
    request_id = uuid.uuid4().hex
    result = inference_tasks.playground(request_id, spec, "hello", GREEDY)
    client = redis_client()
    events = [json.loads(raw) for raw in client.lrange(events_key(request_id), 0, -1)]
    client.delete(events_key(request_id))
    assert "error" in result and events[-1]["error"] == result["error"]
    assert result["error"].startswith("this job's model files are missing from storage")
