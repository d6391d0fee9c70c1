"""/api/jobs against a live server and a real worker: create (the page form's rules, the engine's messages on
API field names), list, detail, events, cancel, downloads, metrics, playground, rate limits, and each error code."""
import io
import zipfile
from types import SimpleNamespace

import pytest

import finished_jobs
from jobs_helpers import completion_rows, make_job, stored_dataset, tiny_entry, wait_for
from test_api_schema import api, assert_matches_schema, other_api  # noqa: F401  (fixtures)
from webapp.env import Rate
from webapp.jobs.models import Job
from webapp.teams.models import Team

pytestmark = pytest.mark.usefixtures("celery_worker")


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    return tmp_path_factory.mktemp("api-tiny-models")


@pytest.fixture
def team(api):
    return Team.objects.get(name="Team A")


@pytest.fixture
def llama(tiny_dirs, transactional_db):
    return tiny_entry("llama", tiny_dirs / "llama")


@pytest.fixture
def dataset(team):
    return stored_dataset(team, completion_rows(), task="causal-lm")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    return finished_jobs.build_artifacts("llama", tmp_path_factory.mktemp("api-run"), merge=True)


def body(model, data_set, **changes):
    data = {"name": "api job", "base_model": model.pk, "dataset": data_set.pk,
            "lora": {"rank": 4, "alpha": 8, "targets": "attention"},
            "training": {"max_steps": 2, "batch_size": 4, "max_length": 64, "lr": 1e-3}}
    data.update(changes)
    return data


def test_a_job_is_created_with_the_page_forms_rules_and_shows_up_everywhere(api, llama, dataset):
    created = api("POST", "/api/jobs", json_body=body(llama, dataset))
    assert created.status_code == 201, created.content
    assert_matches_schema(created, "/api/jobs", "post")
    job_id = created.json()["id"]
    assert created.json()["status"] == "queued"
    stored = Job.objects.get(pk=job_id)
    assert stored.task == "causal-lm" and stored.settings["lora"]["rank"] == 4
    assert stored.settings["max_steps"] == 2 and stored.settings["epochs"] == 3.0  # unset: the form's default
    detail = api("GET", f"/api/jobs/{job_id}")
    assert_matches_schema(detail, "/api/jobs/{job_id}")
    assert detail.json()["params"]["trainable"] > 0  # the form's estimate until the trainer has counted
    listed = api("GET", "/api/jobs")
    assert_matches_schema(listed, "/api/jobs")
    assert [j["id"] for j in listed.json()["items"]] == [job_id]
    events = api("GET", f"/api/jobs/{job_id}/events")
    assert_matches_schema(events, "/api/jobs/{job_id}/events")
    first = events.json()["items"][0]
    assert first["to_state"] == "queued" and first["from_state"] is None
    newer = api("GET", f"/api/jobs/{job_id}/events?after={events.json()['next_after']}").json()
    assert all(e["id"] > first["id"] for e in newer["items"])


def test_a_job_takes_quantize_and_dtype_and_defaults_them(api, llama, dataset):
    quantized = api("POST", "/api/jobs", json_body=body(llama, dataset, training={"max_steps": 2, "quantize": "nf4",
                                                                                    "dtype": "bf16"}))
    assert quantized.status_code == 201, quantized.content
    plain = api("POST", "/api/jobs", json_body=body(llama, dataset))
    settings = {job.pk: job.settings for job in Job.objects.all()}
    assert (settings[quantized.json()["id"]]["quantize"], settings[quantized.json()["id"]]["dtype"]) == ("nf4", "bf16")
    assert (settings[plain.json()["id"]]["quantize"], settings[plain.json()["id"]]["dtype"]) == ("none", "auto")


def test_advised_defaults_fill_the_settings_a_body_leaves_out(api, llama, dataset):
    from trainer.advice import advise, values

    created = api("POST", "/api/jobs", json_body={"name": "advised", "base_model": llama.pk, "dataset": dataset.pk,
                                                  "defaults": "advised", "training": {"lr": 1e-3}})
    assert created.status_code == 201, created.content
    settings = Job.objects.get(pk=created.json()["id"]).settings
    advised = values(advise(llama.info, task="causal-lm", rows=dataset.rows))
    assert settings["lr"] == 1e-3  # given in the body
    assert {name: settings[name] for name in ("epochs", "batch_size", "max_length")} == \
        {name: advised[name] for name in ("epochs", "batch_size", "max_length")}
    assert {name: settings["lora"][name] for name in ("rank", "alpha", "targets")} == \
        {name: advised[name] for name in ("rank", "alpha", "targets")}
    refused = api("POST", "/api/jobs", json_body=body(llama, dataset, defaults="clever"))
    assert refused.status_code == 400 and refused.json()["error"]["field"] == "defaults"


def test_a_model_can_be_named_by_its_source(api, llama, dataset):
    created = api("POST", "/api/jobs", json_body=body(llama, dataset, base_model=llama.source))
    assert created.status_code == 201 and Job.objects.get(pk=created.json()["id"]).base_model == llama


@pytest.mark.parametrize("change, field", [
    ({"lora": {"rank": 0}}, "lora.rank"),
    ({"training": {"lr": 5}}, "training.lr"),
    ({"training": {"batch_size": "many"}}, "training.batch_size"),
    ({"training": {"scheduler": "cosine"}}, "training.scheduler"),
    ({"training": {"quantize": "nf2"}}, "training.quantize"),
    ({"training": {"dtype": "float64"}}, "training.dtype"),
    ({"lora": {"targets": "re:("}}, "lora.targets"),
    ({"colour": "blue"}, "colour"),
    ({"lora": [1, 2]}, "lora"),
    ({"task": "classification"}, "dataset"),  # a causal-lm dataset cannot train a classifier
    ({"task": "translation"}, "task"),
    ({"dataset": "one"}, "dataset"),
])
def test_invalid_settings_are_400_naming_the_field(api, llama, dataset, change, field):
    response = api("POST", "/api/jobs", json_body=body(llama, dataset, **change))
    assert response.status_code == 400, response.content
    assert response.json()["error"]["field"] == field
    assert_matches_schema(response, "/api/jobs", "post")
    assert not Job.objects.exists()


def succeeded_parent(team, model, data_set, run):
    """A succeeded job of `team` on `model` whose adapter in storage is the tiny run's (same tiny llama layout)."""
    parent = make_job(team, model, data_set, state="succeeded", name="sft first")
    parent.artifacts = finished_jobs.upload(run, parent.pk)
    parent.save(update_fields=["artifacts"])
    return parent


def test_a_job_continues_from_a_succeeded_job_given_as_start_from(api, team, llama, dataset, finished_run):
    parent = succeeded_parent(team, llama, dataset, finished_run)
    created = api("POST", "/api/jobs", json_body=body(llama, dataset, start_from=parent.pk))
    assert created.status_code == 201, created.content
    child = Job.objects.get(pk=created.json()["id"])
    assert child.start_from_id == parent.pk
    detail = api("GET", f"/api/jobs/{child.pk}")
    assert_matches_schema(detail, "/api/jobs/{job_id}")
    assert detail.json()["start_from"] == parent.pk
    assert api("GET", f"/api/jobs/{parent.pk}").json()["start_from"] is None
    wait_for(lambda: Job.objects.get(pk=child.pk).is_terminal, what="the continued job to end")
    child.refresh_from_db()
    assert child.state == "succeeded", child.error
    assert "continuing from the adapter in start_from" in child.log_tail  # the worker loaded the parent's adapter


def test_start_from_refusals_name_the_field(api, other_api, team, llama, dataset, tiny_dirs):
    running = make_job(team, llama, dataset, state="running")
    other_base = tiny_entry("llama", tiny_dirs / "other-llama")
    on_other_base = make_job(team, other_base, dataset, state="succeeded", name="elsewhere")
    team_b = Team.objects.get(name="Team B")
    theirs = make_job(team_b, llama, stored_dataset(team_b, completion_rows(), task="causal-lm"), state="succeeded")
    cases = [(running.pk, 400, "is running; only a succeeded job's adapter can be continued"),
             (on_other_base.pk, 400, "an adapter can only continue on the same base model"),
             ("seven", 400, "start_from must be a job id"),
             (theirs.pk, 404, f"no job {theirs.pk} in your team"),
             (10**6, 404, "no job 1000000 in your team")]
    for reference, status, words in cases:
        response = api("POST", "/api/jobs", json_body=body(llama, dataset, start_from=reference))
        assert response.status_code == status, (reference, response.content)
        assert response.json()["error"]["field"] == "start_from" and words in response.json()["error"]["message"]
        assert_matches_schema(response, "/api/jobs", "post")
    assert Job.objects.filter(start_from__isnull=False).count() == 0


def test_a_body_that_is_not_a_json_object_is_400(api):
    for raw in (b"[1, 2]", b"{not json"):
        response = api("POST", "/api/jobs", raw=raw)
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid"


def test_another_teams_dataset_or_an_unknown_model_is_404_naming_the_field(api, other_api, llama, dataset):
    theirs = stored_dataset(Team.objects.get(name="Team B"), completion_rows(), task="causal-lm")
    response = api("POST", "/api/jobs", json_body=body(llama, theirs))
    assert response.status_code == 404 and response.json()["error"]["field"] == "dataset"
    unknown = api("POST", "/api/jobs", json_body=body(llama, dataset, base_model="org/nothing-like-it"))
    assert unknown.status_code == 404 and unknown.json()["error"]["field"] == "base_model"
    assert_matches_schema(unknown, "/api/jobs", "post")


def test_an_invalid_dataset_is_a_409(api, llama, team):
    invalid = stored_dataset(team, completion_rows(), task="causal-lm", status="invalid", error="no rows")
    response = api("POST", "/api/jobs", json_body=body(llama, invalid))
    assert response.status_code == 409 and response.json()["error"]["field"] == "dataset"


def test_a_body_over_the_limit_is_413(api, llama, dataset, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2000
    response = api("POST", "/api/jobs", json_body=body(llama, dataset, name="x" * 3000))
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"


@pytest.fixture
def frozen_window(monkeypatch):
    """The rate limiter's clock stopped 600 s into an hour, and its counters emptied: a test's calls all fall in one
    window however long they take, and Retry-After is known (3000 s to the hour's end, 60 s to a minute's)."""
    import redis
    from django.conf import settings

    from webapp.api import ratelimit

    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter("loraworks:api-rate:*"):
        client.delete(key)
    now = (ratelimit.time.time() // 3600 + 1) * 3600 + 600
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(time=lambda: now))


def test_job_creation_is_rate_limited_per_token(api, other_api, llama, dataset, settings, frozen_window):
    settings.API_RATE_LIMIT_JOBS = Rate(2, 3600)
    statuses = [api("POST", "/api/jobs", json_body=body(llama, dataset)).status_code for _ in range(2)]
    assert statuses == [201, 201]
    limited = api("POST", "/api/jobs", json_body=body(llama, dataset))
    assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limited"
    assert limited["Retry-After"] == "3000" and "retry in 3000 s" in limited.json()["error"]["message"]
    assert_matches_schema(limited, "/api/jobs", "post")
    assert api("GET", "/api/jobs").status_code == 200  # reading is not limited
    assert Job.objects.count() == 2
    theirs = stored_dataset(Team.objects.get(name="Team B"), completion_rows(), task="causal-lm")
    other = other_api("POST", "/api/jobs", json_body=body(llama, theirs))  # another token has its own budget
    assert other.status_code == 201, other.content
    assert Job.objects.count() == 3


def test_another_teams_job_is_404_on_every_route(api, other_api, llama, team):
    theirs = make_job(Team.objects.get(name="Team B"), llama,
                      stored_dataset(Team.objects.get(name="Team B"), completion_rows(), task="causal-lm"),
                      state="succeeded")
    for method, suffix in (("GET", ""), ("GET", "/events"), ("POST", "/cancel"), ("GET", "/adapter"),
                           ("GET", "/merged"), ("GET", "/metrics"), ("POST", "/playground")):
        response = api(method, f"/api/jobs/{theirs.pk}{suffix}", json_body={} if method == "POST" else None)
        assert response.status_code == 404, (suffix, response.content)
        assert_matches_schema(response, "/api/jobs/{job_id}" + suffix, method)
    assert Job.objects.get(pk=theirs.pk).state == "succeeded"


def test_cancelling_a_waiting_job_cancels_it_and_again_is_a_409(api, llama, team):
    waiting_on = stored_dataset(team, completion_rows(), task="causal-lm", status="validating")
    job = make_job(team, llama, waiting_on, state="validating")
    response = api("POST", f"/api/jobs/{job.pk}/cancel")
    assert response.status_code == 200 and response.json() == {"id": job.pk, "status": "cancelled",
                                                               "outcome": "cancelled"}
    assert_matches_schema(response, "/api/jobs/{job_id}/cancel", "post")
    again = api("POST", f"/api/jobs/{job.pk}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
    assert_matches_schema(again, "/api/jobs/{job_id}/cancel", "post")
    events = api("GET", f"/api/jobs/{job.pk}/events").json()["items"]
    assert [e["to_state"] for e in events] == ["validating", "cancelled"]


def test_a_finished_job_downloads_its_adapter_and_merged_model_as_zips(api, team, finished_run):
    job = finished_jobs.make_job(team, finished_run, merged=True)
    adapter = api("GET", f"/api/jobs/{job.pk}/adapter")
    assert adapter.status_code == 200 and adapter["Content-Type"] == "application/zip"
    assert_matches_schema(adapter, "/api/jobs/{job_id}/adapter")
    names = zipfile.ZipFile(io.BytesIO(adapter.content)).namelist()
    assert any(n.endswith("adapter_model.safetensors") for n in names)
    assert any(n.endswith("adapter_config.json") for n in names)
    merged = api("GET", f"/api/jobs/{job.pk}/merged")
    assert merged.status_code == 200
    assert any(n.endswith("config.json") for n in zipfile.ZipFile(io.BytesIO(merged.content)).namelist())
    metrics = api("GET", f"/api/jobs/{job.pk}/metrics")
    assert_matches_schema(metrics, "/api/jobs/{job_id}/metrics")
    assert metrics.json()["metrics"]["final_eval"]["eval_loss"] == 3.1
    detail = api("GET", f"/api/jobs/{job.pk}").json()
    assert detail["final_eval"]["perplexity"] == 22.2 and detail["params"]["trainable"] > 0


def test_downloads_of_an_unfinished_job_are_409_and_a_missing_merge_is_404(api, team, llama, dataset,
                                                                           finished_run):
    running = make_job(team, llama, dataset, state="running")
    for kind in ("adapter", "merged"):
        response = api("GET", f"/api/jobs/{running.pk}/{kind}")
        assert response.status_code == 409
        assert_matches_schema(response, f"/api/jobs/{{job_id}}/{kind}")
    unmerged = finished_jobs.make_job(team, finished_run, merged=False)
    response = api("GET", f"/api/jobs/{unmerged.pk}/merged")
    assert response.status_code == 404 and "merge" in response.json()["error"]["message"]


def test_the_playground_answers_with_base_and_tuned_side_by_side(api, team, finished_run):
    job = finished_jobs.make_job(team, finished_run)
    response = api("POST", f"/api/jobs/{job.pk}/playground",
                   json_body={"prompt": "Hello", "temperature": 0, "max_new_tokens": 8})
    assert response.status_code == 200, response.content
    assert_matches_schema(response, "/api/jobs/{job_id}/playground", "post")
    answer = response.json()
    assert isinstance(answer["base"], str) and isinstance(answer["tuned"], str)
    assert answer["base"] != answer["tuned"]  # the adapter has random, non-zero weights


def test_playground_refusals(api, team, llama, dataset, finished_run, settings):
    running = make_job(team, llama, dataset, state="running")
    busy = api("POST", f"/api/jobs/{running.pk}/playground", json_body={"prompt": "Hi"})
    assert busy.status_code == 409
    job = finished_jobs.make_job(team, finished_run)
    for payload, field in (({"prompt": "   "}, "prompt"), ({"prompt": "Hi", "temperature": 9}, "temperature"),
                           ({"prompt": "Hi", "seed": -1}, "seed"), ({"prompt": "Hi", "top_k": 5}, "top_k"),
                           ({}, "prompt")):
        response = api("POST", f"/api/jobs/{job.pk}/playground", json_body=payload)
        assert response.status_code == 400 and response.json()["error"]["field"] == field, response.content
        assert_matches_schema(response, "/api/jobs/{job_id}/playground", "post")


def test_playground_calls_are_rate_limited_per_token(api, other_api, team, finished_run, settings, frozen_window):
    settings.API_RATE_LIMIT_PLAYGROUND = Rate(1, 60)
    job = finished_jobs.make_job(team, finished_run)
    first = api("POST", f"/api/jobs/{job.pk}/playground", json_body={"prompt": "Hi", "max_new_tokens": 2})
    assert first.status_code == 200, first.content
    limited = api("POST", f"/api/jobs/{job.pk}/playground", json_body={"prompt": "Hi", "max_new_tokens": 2})
    assert limited.status_code == 429 and limited["Retry-After"] == "60"
    assert_matches_schema(limited, "/api/jobs/{job_id}/playground", "post")
    theirs = finished_jobs.make_job(Team.objects.get(name="Team B"), finished_run, name="their job")
    other = other_api("POST", f"/api/jobs/{theirs.pk}/playground", json_body={"prompt": "Hi", "max_new_tokens": 2})
    assert other.status_code == 200, other.content


def test_a_dataset_an_active_job_uses_cannot_be_deleted(api, team, llama, dataset):
    job = make_job(team, llama, dataset, state="running")
    response = api("DELETE", f"/api/datasets/{dataset.pk}")
    assert response.status_code == 409 and job.name in response.json()["error"]["message"]
    assert_matches_schema(response, "/api/datasets/{dataset_id}", "delete")
    assert api("GET", f"/api/datasets/{dataset.pk}").status_code == 200


def test_events_page_through_state_changes_and_the_workers_log_lines_in_order(api, llama, dataset):
    job_id = api("POST", "/api/jobs", json_body=body(llama, dataset)).json()["id"]
    api.wait_for(f"/api/jobs/{job_id}", lambda j: j["status"] in ("succeeded", "failed"), timeout_s=300)
    events, after, pages = [], 0, 0
    while True:
        page = api("GET", f"/api/jobs/{job_id}/events?after={after}&limit=3")
        assert_matches_schema(page, "/api/jobs/{job_id}/events")
        items = page.json()["items"]
        if not items:
            break
        assert len(items) <= 3
        events += items
        after, pages = page.json()["next_after"], pages + 1
    assert pages > 1 and [e["id"] for e in events] == sorted({e["id"] for e in events})
    assert events == api("GET", f"/api/jobs/{job_id}/events?limit=500").json()["items"]
    states_seen = [e["to_state"] for e in events if e["kind"] == "state"]
    assert states_seen == ["queued", "running", "succeeded"]
    logs = [e["message"] for e in events if e["kind"] == "log"]
    assert any(f"loading {llama.source}" in line for line in logs) and logs[-1].endswith(" done")
    assert all(e["from_state"] is None and e["to_state"] is None for e in events if e["kind"] == "log")
    # Stored in the order they happened: the log of the run sits between "running" and "succeeded".
    kinds = [(e["kind"], e["to_state"]) for e in events]
    first_log, last_log = kinds.index(("log", None)), len(kinds) - 1 - kinds[::-1].index(("log", None))
    assert kinds.index(("state", "running")) < first_log and last_log < kinds.index(("state", "succeeded"))
    # The job's own history (the page's list) stays the state changes alone.
    assert [e.to_state for e in Job.objects.get(pk=job_id).events.all()] == states_seen


def test_deleting_a_job_cancels_a_waiting_one_and_removes_its_row_history_and_files(api, other_api, team,
                                                                                   finished_run):
    from django.core.files.storage import default_storage

    from jobs_helpers import wait_for
    from webapp.jobs.models import JobEvent

    finished = finished_jobs.make_job(team, finished_run, merged=True)
    stored = default_storage.listdir(f"jobs/{finished.pk}/")
    assert "adapter" in stored[0] and "metrics.json" in stored[1]
    assert other_api("DELETE", f"/api/jobs/{finished.pk}").status_code == 404  # another team's: not even seen
    response = api("DELETE", f"/api/jobs/{finished.pk}")
    assert response.status_code == 204
    assert_matches_schema(response, "/api/jobs/{job_id}", "delete")
    assert not Job.objects.filter(pk=finished.pk).exists()
    assert not JobEvent.timeline.filter(job_id=finished.pk).exists()
    wait_for(lambda: not default_storage.exists(f"jobs/{finished.pk}/metrics.json"), 10, what="its files to go")
    assert default_storage.listdir(f"jobs/{finished.pk}/adapter/")[1] == []
    assert api("GET", f"/api/jobs/{finished.pk}").status_code == 404

    waiting = make_job(team, finished.base_model, finished.dataset, state="queued")
    assert api("DELETE", f"/api/jobs/{waiting.pk}").status_code == 204
    assert not Job.objects.filter(pk=waiting.pk).exists()


def test_deleting_a_running_job_asks_it_to_stop_and_answers_409_until_it_has(api, team, finished_run):
    from django.utils import timezone

    finished = finished_jobs.make_job(team, finished_run)
    now = timezone.now()
    running = make_job(team, finished.base_model, finished.dataset, state="running", started_at=now,
                       heartbeat_at=now, name="busy")
    response = api("DELETE", f"/api/jobs/{running.pk}")
    assert response.status_code == 409 and "stops at its next step" in response.json()["error"]["message"]
    assert_matches_schema(response, "/api/jobs/{job_id}", "delete")
    running.refresh_from_db()
    assert running.state == "running" and running.cancel_requested_at is not None
