"""The playground: the page, input checks, team isolation, and base vs fine-tuned answers streamed end to end
through a real Celery worker on tiny models (with the worker's model cache making repeat requests load nothing)."""
import json
import uuid
from collections import defaultdict

import pytest
from django.urls import reverse

import finished_jobs

SAMPLING = {"temperature": "0.8", "top_p": "0.9", "max_new_tokens": "12", "seed": "5"}  # seeded: known answers


def run(client, job, prompt="Name a color", **overrides):
    return client.post(reverse("results:playground_run"), {"job": job.pk, "prompt": prompt, **SAMPLING, **overrides})


def events_of(response) -> list[dict]:
    assert response.status_code == 200 and response["Content-Type"] == "text/event-stream"
    text = b"".join(response.streaming_content).decode()
    return [json.loads(line[len("data: "):]) for block in text.split("\n\n") for line in block.splitlines()
            if line.startswith("data: ")]


def answer(client, job, prompt="Name a color", **overrides) -> list[dict]:
    started = run(client, job, prompt, **overrides)
    assert started.status_code == 202, started.content
    return events_of(client.get(started.json()["stream_url"]))


def text_of(events, side):
    return "".join(e["text"] for e in events if e.get("side") == side and "text" in e)


def test_the_page_offers_only_the_teams_finished_jobs(member_client, team_a, team_b, llama_run):
    done = finished_jobs.make_job(team_a, llama_run, name="finished one")
    finished_jobs.make_job(team_a, llama_run, name="still running", state="running")
    finished_jobs.make_job(team_b, llama_run, name="other team's")
    page = member_client.get(reverse("results:playground"), {"job": done.pk}).content.decode()
    assert f'<option value="{done.pk}" selected>#{done.pk} finished one' in page
    assert "still running" not in page and "other team" not in page
    assert 'name="temperature"' in page and 'name="top_p"' in page and 'name="max_new_tokens"' in page
    assert 'name="seed"' in page


@pytest.mark.parametrize("overrides, field, message", [
    ({"prompt": "   "}, "prompt", "Type a prompt (or, for a classifier, a text) first."),
    ({"prompt": "x" * 4001}, "prompt", "The prompt is 4001 characters; the playground takes at most 4000."),
    ({"max_new_tokens": "257"}, "max_new_tokens", "Max new tokens is at most 256 in the playground."),
    ({"temperature": "-1"}, "temperature", "Ensure this value is greater than or equal to 0."),
    ({"top_p": "0"}, "top_p", "Ensure this value is greater than or equal to 0.01."),
    ({"seed": "-1"}, "seed", "Ensure this value is greater than or equal to 0."),
])
def test_bad_input_is_refused_with_a_message_naming_the_field(member_client, team_a, llama_run, overrides, field,
                                                              message):
    job = finished_jobs.make_job(team_a, llama_run)
    response = run(member_client, job, **{"prompt": "hi", **overrides})
    assert response.status_code == 400 and response.json()["errors"] == {field: [message]}


def test_a_seed_given_is_used_by_both_sides_and_a_blank_one_is_drawn_fresh_each_run(team_a, llama_run):
    from webapp.jobs.models import Job
    from webapp.results.forms import PlaygroundForm

    job = finished_jobs.make_job(team_a, llama_run)

    def sampling(seed: str) -> dict:
        form = PlaygroundForm(Job.objects.all(), {"job": job.pk, "prompt": "hi", **SAMPLING, "seed": seed})
        assert form.is_valid(), form.errors
        return form.sampling()

    assert sampling("42") == {"temperature": 0.8, "top_p": 0.9, "max_new_tokens": 12, "seed": 42}
    drawn = {sampling("")["seed"] for _ in range(3)}
    assert len(drawn) > 1 and all(0 <= seed < 2**31 for seed in drawn), drawn


def test_a_job_on_preference_rows_is_prompted_in_the_layout_its_prompts_trained_in(team_a, llama_run):
    from trainer.models import load_model
    from webapp.results.playground import job_spec
    from workers.serving_tasks import prompt_for

    job = finished_jobs.make_job(team_a, llama_run)
    tokenizer = load_model(str(llama_run / "base"), "causal-lm")[1]
    for layout, expected in (("chat", "chat"), ("text", "preference")):
        job.metrics = {**job.metrics, "data": {**job.metrics["data"], "format": "preference", "prompt_layout": layout}}
        assert job_spec(job)["format"] == expected
    # Chat turns go to the chat template as the user's message; a plain prompt is taken as it is.
    assert prompt_for("chat", "Colour?", tokenizer) == [{"role": "user", "content": "Colour?"}]
    assert prompt_for("preference", "Question: Colour?\nAnswer:", tokenizer) == "Question: Colour?\nAnswer:"


def test_another_teams_job_cannot_be_run_and_its_answers_cannot_be_read(member_client, team_a, team_b, llama_run,
                                                                          client, settings):
    from webapp.results.playground import owner_key, redis_client

    theirs = finished_jobs.make_job(team_b, llama_run)
    response = run(member_client, theirs)
    assert response.status_code == 400 and response.json()["errors"] == {
        "job": ["Pick one of your team's finished jobs."]}
    request_id = uuid.uuid4().hex
    redis_client().set(owner_key(request_id), team_b.pk, ex=60)
    assert member_client.get(reverse("results:playground_stream", args=[request_id])).status_code == 404
    assert member_client.get(reverse("results:playground_stream", args=[uuid.uuid4().hex])).status_code == 404


@pytest.mark.parametrize("method, name", [("get", "results:playground"), ("post", "results:playground_run"),
                                          ("get", "results:playground_stream")])
def test_anonymous_visitors_are_sent_to_sign_in(client, db, method, name):
    url = reverse(name, args=[uuid.uuid4().hex]) if name.endswith("stream") else reverse(name)
    response = getattr(client, method)(url)
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_a_silent_worker_ends_the_stream_with_a_clear_message(member_client, team_a, settings):
    from webapp.results.playground import owner_key, redis_client

    settings.PLAYGROUND_STREAM_TIMEOUT_S = 0.5
    request_id = uuid.uuid4().hex
    redis_client().set(owner_key(request_id), team_a.pk, ex=60)
    events = events_of(member_client.get(reverse("results:playground_stream", args=[request_id])))
    assert events == [{"error": "no answer from the inference worker in 0.5 s: is a worker serving the infer "
                                "queue running?"}]


def test_collect_joins_a_whole_answer_and_raises_the_workers_error(db):
    from webapp.results.playground import PlaygroundFailed, collect, events_key, push, redis_client

    client, request_id = redis_client(), uuid.uuid4().hex
    for event in [{"status": "loading"}, {"side": "base", "text": "Hel"}, {"side": "tuned", "probs": {"a": 1.0}},
                  {"side": "base", "text": "lo"}, {"end": True, "stats": {}}]:
        push(client, request_id, event)
    assert collect(client, request_id, 5) == {"base": {"text": "Hello", "probs": None},
                                              "tuned": {"text": "", "probs": {"a": 1.0}}}
    assert not client.exists(events_key(request_id))
    push(client, request_id, {"error": "out of memory"})
    with pytest.raises(PlaygroundFailed, match="out of memory"):
        collect(client, request_id, 5)


def pieces_computed_here(run, job, prompt: str) -> dict[str, list[str]]:
    """The pieces each side's answer streams in, computed in the test with the job's base and adapter, the
    worker's prompt layout and the form's sampling settings."""
    from trainer.inference import load_for_inference, stream_generate
    from webapp.results.playground import job_spec
    from workers.serving_tasks import prompt_for

    sampling = {"temperature": float(SAMPLING["temperature"]), "top_p": float(SAMPLING["top_p"]),
                "max_new_tokens": int(SAMPLING["max_new_tokens"]), "seed": int(SAMPLING["seed"])}
    models = {"base": load_for_inference(str(run / "base"), task="causal-lm"),
              "tuned": load_for_inference(str(run / "base"), task="causal-lm", adapter_dir=run / "out" / "adapter")}
    return {side: list(stream_generate(model, tokenizer, prompt_for(job_spec(job)["format"], prompt, tokenizer), **sampling))
            for side, (model, tokenizer) in models.items()}


@pytest.mark.django_db(transaction=True)
def test_base_and_fine_tuned_answers_stream_from_a_real_worker_and_repeats_load_nothing(
        celery_worker, member_client, team_a, llama_run):
    job = finished_jobs.make_job(team_a, llama_run)
    first = answer(member_client, job)
    # The seed is pinned: each side streams, piece by piece, what the same models give here.
    streamed = {side: [e["text"] for e in first if e.get("side") == side and "text" in e] for side in ("base", "tuned")}
    assert streamed == pieces_computed_here(llama_run, job, "Name a color")
    statuses = [e["status"] for e in first if "status" in e]
    assert set(statuses[:-1]) == {"loading"} and statuses[-1] == "generating" and first[0] == {"status": "loading"}
    assert text_of(first, "base") and text_of(first, "tuned") and text_of(first, "base") != text_of(first, "tuned")
    assert {e["side"] for e in first if e.get("done")} == {"base", "tuned"}
    stats = first[-1]["stats"]
    assert first[-1]["end"] is True and stats["batch_rows"] == 2  # base and tuned rows in one batch

    # The worker has several pool processes, each with its own base and adapters: of three requests in a row,
    # two land on the same process, and any request on a process that has answered this job before loads nothing.
    served = defaultdict(int)
    loads = {stats["pid"]: stats["adapter_loads"]}
    served[stats["pid"]] += 1
    for _ in range(3):
        events = answer(member_client, job)
        stats = events[-1]["stats"]
        assert text_of(events, "tuned")
        if served[stats["pid"]]:
            assert not stats["base_loaded_now"] and stats["adapter_loads"] == loads[stats["pid"]]
        loads[stats["pid"]] = stats["adapter_loads"]
        # Same seed and settings: the same answers, from whichever process serves them.
        assert [text_of(events, side) for side in ("base", "tuned")] == [text_of(first, side)
                                                                         for side in ("base", "tuned")]
        served[stats["pid"]] += 1
    assert max(served.values()) >= 2


@pytest.mark.django_db(transaction=True)
def test_classification_shows_label_probabilities_for_both_models_from_a_real_worker(
        celery_worker, member_client, team_a, bert_run):
    job = finished_jobs.make_job(team_a, bert_run)
    events = answer(member_client, job, "the app crashes when I log in")
    probs = {e["side"]: e["probs"] for e in events if "probs" in e}
    assert set(probs) == {"base", "tuned"} and events[-1]["end"] is True
    for side in probs:
        assert set(probs[side]) == set(finished_jobs.tiny_models.LABELS)
        assert sum(probs[side].values()) == pytest.approx(1.0)
