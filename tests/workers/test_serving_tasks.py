"""The serving worker's batch code, run in-process on tiny models: prompt layout, base and adapter rows answering
what each model alone generates, adapters hot-swapped with an LRU on one loaded base, a bad request failing
alone, and the Redis side (batching window, worker announcements). The path through gunicorn and a real worker
is in tests/webapp/test_v1_openai.py and tests/webapp/test_playground.py."""
import itertools
import json
import threading
import time
import uuid

import pytest

import finished_jobs
from trainer.data.render import DEFAULT_CHAT_TEMPLATE, segments
from trainer.inference import prompt_ids
from workers import serving_tasks
from workers.inference_tasks import ModelCache

SAMPLING = {"temperature": 0.8, "top_p": 0.9, "max_new_tokens": 12, "seed": 3}


@pytest.fixture
def fresh_engines(monkeypatch):
    engines = ModelCache(lambda: 1)
    monkeypatch.setattr(serving_tasks, "ENGINES", engines)
    return engines


def request(adapter_rows: dict, prompt="Name a color", layout="alpaca", stop=()) -> dict:
    """A serving request with one row per side: {side: adapter storage folder or None}."""
    return {"id": uuid.uuid4().hex, "rows": [
        {"side": side, "adapter": adapter, "layout": layout, "prompt": prompt, "sampling": SAMPLING,
         "stop": list(stop)} for side, adapter in adapter_rows.items()]}


def serve(base, *requests) -> tuple[dict, dict]:
    """({request id: [events]}, stats) of serving `requests` as one batch."""
    events = {r["id"]: [] for r in requests}
    stats = serving_tasks.serve_batch(str(base), list(requests), lambda rid, event: events[rid].append(event))
    return events, stats


def joined(events: list[dict], side: str) -> str:
    return "".join(e["text"] for e in events if e.get("side") == side and "text" in e)


def test_prompts_are_laid_out_like_the_training_data(llama_run):
    from trainer.models import load_tokenizer

    tokenizer = load_tokenizer(llama_run / "base")
    plain = load_tokenizer(llama_run / "base")
    plain.chat_template = None
    prompt_for = serving_tasks.prompt_for
    assert prompt_for("alpaca", "Name a color", tokenizer) == "### Instruction:\nName a color\n\n### Response:\n"
    assert prompt_for("prompt_completion", "2+2=", tokenizer) == "2+2= "
    assert prompt_for("text", "Once upon", tokenizer) == "Once upon"
    assert prompt_for("chat", "Hi", tokenizer) == [{"role": "user", "content": "Hi"}]
    conversation = [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Hi"}]
    assert prompt_for("messages", conversation, tokenizer) == conversation
    # No template of its own: the default one training used, so the prompt's tokens are the training rows' own.
    assert prompt_for("chat", "Hi", plain) == [{"role": "user", "content": "Hi"}]
    assert plain.chat_template == DEFAULT_CHAT_TEMPLATE
    row = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    trained_prompt = "".join(text for text, _ in itertools.takewhile(lambda seg: not seg[1],
                                                                       segments(row, "chat", plain)))
    assert prompt_ids(plain, [{"role": "user", "content": "Hi"}], 100) == plain(
        trained_prompt, add_special_tokens=False)["input_ids"]


def test_base_and_adapter_rows_answer_what_each_model_alone_generates_and_a_repeat_loads_nothing(
        llama_run, stored, fresh_engines):
    from trainer.inference import generate, load_for_inference

    adapter = stored(llama_run)["adapter"]
    asked = request({"base": None, "tuned": adapter})
    events, stats = serve(llama_run / "base", asked)
    answer = events[asked["id"]]
    prompt = "### Instruction:\nName a color\n\n### Response:\n"
    base = load_for_inference(str(llama_run / "base"), task="causal-lm")
    tuned = load_for_inference(str(llama_run / "base"), task="causal-lm", adapter_dir=llama_run / "out" / "adapter")
    assert joined(answer, "base") == generate(*base, prompt, **SAMPLING)
    assert joined(answer, "tuned") == generate(*tuned, prompt, **SAMPLING)
    assert joined(answer, "base") != joined(answer, "tuned")
    assert answer[0] == {"status": "loading"} and answer[-1]["end"]
    assert [e for e in answer if "status" in e or "prompt" in e][1:] == [  # what each row's model is given first
        {"side": "base", "prompt": prompt}, {"side": "tuned", "prompt": prompt}, {"status": "generating"}]
    done = {e["side"]: e for e in answer if e.get("done")}
    assert set(done) == {"base", "tuned"} and done["tuned"]["usage"]["prompt_tokens"] == len(
        prompt_ids(tuned[1], prompt, 1024))
    sides = [e["side"] for e in answer if "text" in e]
    assert set(sides[:2]) == {"base", "tuned"}  # one batch: both columns fill together
    assert (stats["base_loads"], stats["adapter_loads"], stats["batch_rows"]) == (1, 1, 2)

    again, stats = serve(llama_run / "base", request({"tuned": adapter}))
    assert (stats["base_loads"], stats["adapter_loads"], stats["adapter_hits"]) == (1, 1, 1)
    assert joined(next(iter(again.values())), "tuned") == joined(answer, "tuned")


def test_each_row_is_shown_the_prompt_its_model_is_given_in_its_own_chat_template(llama_run, stored, fresh_engines):
    from trainer.inference import adapter_tokenizer
    from trainer.models import load_tokenizer

    asked = request({"base": None, "tuned": stored(llama_run)["adapter"]}, layout="chat")
    events = serve(llama_run / "base", asked)[0][asked["id"]]
    shown = {e["side"]: e["prompt"] for e in events if "prompt" in e}
    message = [{"role": "user", "content": "Name a color"}]
    base_tokenizer = load_tokenizer(llama_run / "base")
    tuned_tokenizer = adapter_tokenizer(llama_run / "out" / "adapter") or base_tokenizer
    assert shown == {"base": base_tokenizer.apply_chat_template(message, tokenize=False, add_generation_prompt=True),
                     "tuned": tuned_tokenizer.apply_chat_template(message, tokenize=False,
                                                                  add_generation_prompt=True)}
    assert shown["base"] == "<|user|>\nName a color\n<|assistant|>\n"  # the base folder's own template
    first_text = next(i for i, e in enumerate(events) if "text" in e)
    assert max(i for i, e in enumerate(events) if "prompt" in e) < first_text


def test_adapters_beyond_the_cache_size_evict_the_least_recently_used_but_never_one_in_the_batch(
        llama_run, stored, fresh_engines, settings):
    settings.SERVE_ADAPTER_CACHE = 1
    first, second = stored(llama_run)["adapter"], stored(llama_run)["adapter"]
    events, stats = serve(llama_run / "base", request({"a": first}), request({"b": second}))
    assert stats["adapters_loaded"] == 2 and stats["batch_rows"] == 2  # both needed now: none evicted
    assert all(joined(e, side) for e, side in zip(events.values(), "ab"))
    _, stats = serve(llama_run / "base", request({"a": first}))
    engine = next(iter(fresh_engines.entries.values()))
    assert stats["adapters_loaded"] == 1 and list(engine.tokenizers) == [first]
    assert set(engine.adapters.slots) == {first}


def test_a_request_whose_adapter_is_missing_fails_alone_and_the_rest_of_the_batch_is_answered(
        llama_run, stored, fresh_engines):
    good = request({"tuned": stored(llama_run)["adapter"]})
    missing = request({"tuned": f"jobs/missing-{uuid.uuid4().hex}/adapter/"})
    events, stats = serve(llama_run / "base", missing, good)
    assert [e for e in events[missing["id"]] if "error" in e][0]["error"].startswith(
        "this job's model files are missing from storage")
    assert joined(events[good["id"]], "tuned") and events[good["id"]][-1]["end"] and stats["batch_requests"] == 1


def test_a_stop_string_ends_a_row_and_its_finish_reason_is_stop(llama_run, stored, fresh_engines):
    adapter = stored(llama_run)["adapter"]
    greedy = dict(SAMPLING, temperature=0.0)
    free = request({"t": adapter}, layout="text", prompt="Once")
    free["rows"][0]["sampling"] = greedy
    events, _ = serve(llama_run / "base", free)
    text = joined(events[free["id"]], "t")
    stopped = request({"t": adapter}, layout="text", prompt="Once", stop=[text[3:5]])
    stopped["rows"][0]["sampling"] = greedy
    events, _ = serve(llama_run / "base", stopped)
    assert joined(events[stopped["id"]], "t") == text[:text.index(text[3:5])]
    assert [e["finish_reason"] for e in events[stopped["id"]] if e.get("done")] == ["stop"]


def test_the_batching_window_takes_requests_arriving_within_it_up_to_the_row_limit(db):
    from webapp.serving.protocol import pending_key, redis_client, take_batch

    client, base = redis_client(), f"base-{uuid.uuid4().hex}"

    def put(rows):
        client.rpush(pending_key(base), json.dumps({"id": uuid.uuid4().hex, "rows": [{}] * rows}))

    put(1)
    threading.Timer(0.05, put, args=[2]).start()
    started = time.monotonic()
    assert [len(r["rows"]) for r in take_batch(client, base, 8, 0.3)] == [1, 2]
    assert time.monotonic() - started >= 0.3
    for rows in (2, 3, 4):
        put(rows)
    assert [len(r["rows"]) for r in take_batch(client, base, 6, 0.0)] == [2, 3]  # 4 more would pass 6
    assert [len(r["rows"]) for r in take_batch(client, base, 6, 0.0)] == [4]
    assert take_batch(client, base, 6, 0.0) == []


def test_workers_are_counted_while_their_announcement_lasts(db):
    from webapp.serving import protocol

    client, queue = protocol.redis_client(), f"infer.{uuid.uuid4().hex}"
    assert protocol.workers_alive(client, queue) == 0
    protocol.announce(client, queue, "w1@host")
    assert protocol.workers_alive(client, queue) == 1
    client.zadd(protocol.alive_key(queue), {"w1@host": time.time() - 1})  # its last announcement ran out
    assert protocol.workers_alive(client, queue) == 0
    protocol.announce(client, queue, "w2@host")
    protocol.withdraw(client, queue, "w2@host")
    assert protocol.workers_alive(client, queue) == 0
