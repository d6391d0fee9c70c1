"""Job pages: list and filters, the create form (validation with the engine's messages, the live estimate,
Clone), the detail page, the progress feeds, and team isolation of every page."""
import json
import threading
import time

import pytest
from django.test import Client
from django.urls import reverse

from jobs_helpers import classification_rows, completion_rows, make_job, stored_dataset, tiny_entry
from trainer.advice import advise, values
from webapp.jobs import live, states
from webapp.jobs.models import Job


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture
def team(member_client):
    return member_client.user.teams.get()


@pytest.fixture
def llama(tiny_dirs, db):
    return tiny_entry("llama", tiny_dirs / "llama")


@pytest.fixture
def bert(tiny_dirs, db):
    return tiny_entry("bert", tiny_dirs / "bert")


@pytest.fixture
def dataset(team):
    return stored_dataset(team, completion_rows(), task="causal-lm")


def form_data(model, dataset, **changes):
    data = {"name": "my job", "base_model": model.pk, "dataset": dataset.pk, "task": "", "rank": 8, "alpha": 16,
            "dropout": 0.05, "targets": "attention", "custom_targets": "", "epochs": 1, "max_steps": "",
            "lr": 2e-4, "batch_size": 8, "grad_accum": 1, "max_length": 128, "warmup": 0.03, "eval_fraction": 0.1,
            "seed": 0}
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


@pytest.fixture(autouse=True)
def no_task_sending(monkeypatch):
    """These tests look at pages only: tasks are recorded, not sent (the worker tests send them for real)."""
    sent = []
    monkeypatch.setattr("webapp.jobs.queue.send", lambda job_id, task_id=None: sent.append(job_id))
    return sent


# --- create -----------------------------------------------------------------------------------------------------

def test_the_form_shows_every_setting_with_its_default_and_an_explanation(member_client, llama, dataset):
    page = member_client.get(reverse("jobs:create")).content.decode()
    for name, default in [("dropout", "0.05"), ("grad_accum", "1"), ("warmup", "0.03"), ("eval_fraction", "0.1"),
                          ("seed", "0"), ("beta", "0.1"), ("eval_every", "0"), ("early_stopping_patience", "0")]:
        assert f'name="{name}" value="{default}"' in page, name
    # The settings the advisor proposes start from its values (tests/webapp/test_job_advice.py).
    advised = values(advise(llama.info, task="causal-lm", rows=dataset.rows))
    for name in ("rank", "alpha", "epochs", "lr", "batch_size", "max_length", "rpo_alpha"):
        assert f'name="{name}" value="{advised[name]}"' in page, name
    for name in ("eval_dataset", "task", "targets", "custom_targets", "rslora", "max_steps", "merge", "quantize",
                 "dtype", "gradient_checkpointing", "method", "keep", "start_from", "sample_answers",
                 "sample_prompts", "priority"):
        assert f'name="{name}"' in page
    for value in ("none", "nf4", "int8"):
        assert f'<option value="{value}"' in page.split('name="quantize"', 1)[1].split("</select>", 1)[0]
    assert '<option value="auto" selected>' in page.split('name="dtype"', 1)[1].split("</select>", 1)[0]
    assert '<option value="normal" selected>' in page.split('name="priority"', 1)[1].split("</select>", 1)[0]
    assert page.count('class="help"') == 35  # one per field
    assert llama.name in page and dataset.name in page


def test_a_valid_form_creates_a_queued_job_with_the_task_from_the_dataset(member_client, llama, dataset,
                                                                          no_task_sending):
    with_commit = member_client.post(reverse("jobs:create"), form_data(llama, dataset, rank=4, targets="all-linear"))
    job = Job.objects.get()
    assert with_commit.status_code == 302 and with_commit.url == reverse("jobs:detail", args=[job.pk])
    assert job.state == states.QUEUED and job.task == "causal-lm" and job.queued_at is not None
    assert job.settings["lora"] == {"rank": 4, "alpha": 16.0, "dropout": 0.05, "rslora": False,
                                    "targets": "all-linear"}
    assert job.settings["max_steps"] is None and job.settings["max_length"] == 128
    assert (job.settings["quantize"], job.settings["dtype"]) == ("none", "auto")  # not posted: the defaults
    quantized = member_client.post(reverse("jobs:create"), form_data(llama, dataset, quantize="nf4", dtype="bf16"))
    assert quantized.status_code == 302
    stored = Job.objects.latest("pk").settings
    assert (stored["quantize"], stored["dtype"]) == ("nf4", "bf16")
    assert job.celery_task_id and job.events.get().to_state == states.QUEUED


def test_a_job_on_a_dataset_still_validating_waits_in_validating(member_client, llama, team):
    dataset = stored_dataset(team, completion_rows(), task="", status="validating")
    member_client.post(reverse("jobs:create"), form_data(llama, dataset, task="causal-lm"))
    assert Job.objects.get().state == states.VALIDATING


def test_every_refused_setting_is_shown_at_once_with_its_label(member_client, llama, dataset):
    response = member_client.post(reverse("jobs:create"), form_data(llama, dataset, rank=0, lr=5, max_length=4))
    errors = response.context["form"].errors
    assert errors["rank"] == ["Rank must be a whole number from 1 to 1024"]
    assert errors["lr"] == ["Learning rate must be a number above 0 and at most 1"]
    assert errors["max_length"] == ["Max length must be from 8 to 32768"]
    assert not Job.objects.exists()


@pytest.mark.parametrize("changes,field,message", [
    ({"rank": 0}, "rank", "Rank must be a whole number from 1 to 1024"),
    ({"alpha": -1}, "alpha", "Alpha must be a positive number"),
    ({"dropout": 1.5}, "dropout", "Dropout must be at least 0 and below 1"),
    ({"epochs": 0}, "epochs", "Epochs must be above 0 and at most 1000"),
    ({"max_steps": -3}, "max_steps", "Max steps must be a positive whole number"),
    ({"lr": 0}, "lr", "Learning rate must be a number above 0 and at most 1"),
    ({"batch_size": 0}, "batch_size", "Batch size must be from 1 to 4096"),
    ({"grad_accum": 5000}, "grad_accum", "Gradient accumulation must be from 1 to 1024"),
    ({"max_length": 4}, "max_length", "Max length must be from 8 to 32768"),
    ({"warmup": 1}, "warmup", "Warmup is a fraction of steps, from 0 to below 1"),
    ({"eval_fraction": 1}, "eval_fraction", "Eval fraction must be from 0 to below 1"),
    ({"seed": -1}, "seed", "Seed must be a whole number from 0 to 2^32-1"),
    ({"rank": "eight"}, "rank", "Enter a whole number."),
    ({"targets": "custom", "custom_targets": ""}, "custom_targets", "List the module names to target"),
    ({"targets": "custom", "custom_targets": "nope_proj"}, "custom_targets", "match"),
    ({"task": "classification"}, "task", "cannot be trained for classification"),
])
def test_invalid_settings_are_refused_with_the_engines_message_on_their_field(member_client, llama, dataset,
                                                                              changes, field, message):
    llama.task_types = ["causal-lm"]
    llama.save()
    response = member_client.post(reverse("jobs:create"), form_data(llama, dataset, **changes))
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert field in errors and message in " ".join(errors[field]), errors
    assert message in response.content.decode().replace("&#x27;", "'")
    assert not Job.objects.exists()


def test_a_dataset_of_the_wrong_task_or_invalid_or_another_teams_is_refused(member_client, llama, team,
                                                                             make_member):
    classification = stored_dataset(team, classification_rows(), task="classification", name="labels")
    response = member_client.post(reverse("jobs:create"), form_data(llama, classification, task="causal-lm"))
    assert response.context["form"].errors["dataset"] == [
        "labels is a classification dataset, but this job's task is causal-lm."]
    make_member("bob", "Team B")
    other = stored_dataset(make_member("bob", "Team B").teams.get(), completion_rows(), task="causal-lm")
    response = member_client.post(reverse("jobs:create"), form_data(llama, other))
    assert "dataset" in response.context["form"].errors
    assert not Job.objects.exists()


def test_a_model_still_being_inspected_is_refused(member_client, dataset):
    from webapp.catalog.models import BaseModel

    waiting = BaseModel.objects.create(name="later", source="org/later", status="inspecting")
    response = member_client.post(reverse("jobs:create"), form_data(waiting, dataset))
    assert "still being inspected" in str(response.context["form"].errors["base_model"])


def test_clone_fills_the_form_with_an_earlier_jobs_settings(member_client, llama, dataset):
    member_client.post(reverse("jobs:create"), form_data(llama, dataset, rank=16, alpha=32, lr=1e-3, seed=7,
                                                         targets="custom", custom_targets="q_proj,v_proj"))
    job = Job.objects.get()
    form = member_client.get(reverse("jobs:create") + f"?clone={job.pk}").context["form"]
    assert form.initial["rank"] == 16 and form.initial["alpha"] == 32 and form.initial["lr"] == 1e-3
    assert form.initial["targets"] == "custom" and form.initial["custom_targets"] == "q_proj,v_proj"
    assert form.initial["name"] == "my job (copy)" and form.initial["dataset"] == dataset.pk


# --- the live estimate ----------------------------------------------------------------------------------------

def test_the_estimate_endpoint_matches_trainer_estimate(member_client, llama):
    from trainer.estimate import estimate

    url = reverse("jobs:estimate")
    data = member_client.get(url, {"base_model": llama.pk, "targets": "attention", "rank": 8, "batch_size": 4,
                                   "max_length": 64, "task": "causal-lm"}).json()
    expected = estimate(llama.info, targets="attention", rank=8, task="causal-lm", batch_size=4, max_length=64)
    assert data["trainable"] == expected["trainable"] > 0
    assert data["memory"]["total"] == expected["memory"]["total"]
    bigger = member_client.get(url, {"base_model": llama.pk, "targets": "all-linear", "rank": 16, "batch_size": 4,
                                     "max_length": 64}).json()
    assert bigger["trainable"] > data["trainable"] and bigger["adapter_bytes"] > data["adapter_bytes"]


def test_the_estimate_sizes_a_classifier_head_for_the_chosen_datasets_labels(member_client, team, bert, team_b):
    from trainer.estimate import estimate

    labels = {"a": 3, "b": 3, "c": 3, "d": 3, "e": 3}
    tickets = stored_dataset(team, [], task="classification", report={"labels": labels})
    theirs = stored_dataset(team_b, [], task="classification", report={"labels": {"x": 1, "y": 1}})
    query = {"base_model": bert.pk, "targets": "attention", "rank": 4, "batch_size": 4, "max_length": 64,
             "task": "classification"}
    url = reverse("jobs:estimate")
    data = member_client.get(url, {**query, "dataset": tickets.pk}).json()
    expected = estimate(bert.info, targets="attention", rank=4, task="classification", batch_size=4, max_length=64,
                        num_labels=5)
    assert data["trainable"] == expected["trainable"] and data["total"] == expected["total"]
    as_inspected = member_client.get(url, query).json()
    assert data["trainable"] != as_inspected["trainable"]
    assert member_client.get(url, {**query, "dataset": theirs.pk}).json() == as_inspected  # not another team's


def test_the_estimate_endpoint_explains_bad_input(member_client, llama):
    url = reverse("jobs:estimate")
    bad = member_client.get(url, {"base_model": llama.pk, "targets": "nothing_here", "rank": 8, "batch_size": 4,
                                  "max_length": 64})
    assert bad.status_code == 400 and "q_proj" in bad.json()["error"]  # lists what there is
    assert member_client.get(url, {"base_model": llama.pk, "rank": "x", "batch_size": 4,
                                   "max_length": 64}).status_code == 400


def test_the_web_process_never_imports_torch():
    import subprocess
    import sys

    code = ("import os, sys; os.environ['DJANGO_SETTINGS_MODULE'] = 'webapp.settings'; import django; "
            "django.setup(); import webapp.urls, webapp.jobs.views, webapp.jobs.forms, webapp.catalog.views, "
            "trainer.estimate; print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


# --- list and detail ------------------------------------------------------------------------------------------

def test_the_list_shows_state_progress_model_dataset_and_filters_by_state(member_client, team, llama, dataset):
    running = make_job(team, llama, dataset, name="the running one", state="running",
                       progress={"step": 5, "total_steps": 10})
    make_job(team, llama, dataset, name="the failed one", state="failed")
    page = member_client.get(reverse("jobs:list")).content.decode()
    assert "the running one" in page and "the failed one" in page and 'class="badge running"' in page
    assert 'style="width: 50.0%"' in page and "5/10" in page and llama.name in page and dataset.name in page
    filtered = member_client.get(reverse("jobs:list") + "?state=failed").content.decode()
    assert "the failed one" in filtered and "the running one" not in filtered
    assert running.percent == 50.0


def test_the_detail_page_shows_queue_position_settings_and_history(member_client, team, llama, dataset):
    first = make_job(team, llama, dataset, name="first", settings={"lr": 0.001, "lora": {"rank": 4}})
    second = make_job(team, llama, dataset, name="second")
    page = member_client.get(reverse("jobs:detail", args=[second.pk])).content.decode()
    assert 'Position <strong data-live="position">2</strong> in the training queue' in page
    page = member_client.get(reverse("jobs:detail", args=[first.pk])).content.decode()
    assert 'Position <strong data-live="position">1</strong>' in page and "LoRA rank" in page and "0.001" in page
    assert "created by a test" in page and 'id="loss-chart"' in page and "Cancel" in page


def test_a_failed_job_page_shows_the_reason(member_client, team, llama, dataset):
    job = make_job(team, llama, dataset, state="failed", error="training ran out of memory: lower batch_size",
                   log_tail="step 1\nboom")
    page = member_client.get(reverse("jobs:detail", args=[job.pk])).content.decode()
    assert "training ran out of memory: lower batch_size" in page and '<pre id="log" data-live="log">step 1\nboom</pre>' in page
    assert "Cancel" not in page


def test_cancelling_a_queued_job_marks_it_cancelled(member_client, team, llama, dataset):
    job = make_job(team, llama, dataset)
    response = member_client.post(reverse("jobs:cancel", args=[job.pk]))
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.state == states.CANCELLED and job.finished_at is not None
    assert job.events.last().reason == "cancelled by alice before it ran"


def test_cancelling_a_running_job_raises_its_stop_flag(member_client, team, llama, dataset):
    from django.utils import timezone

    job = make_job(team, llama, dataset, state="running", heartbeat_at=timezone.now())
    member_client.post(reverse("jobs:cancel", args=[job.pk]))
    job.refresh_from_db()
    assert job.state == states.RUNNING and live.cancel_requested(job.pk) and job.cancel_requested_at is not None
    assert "Stopping…" in member_client.get(reverse("jobs:detail", args=[job.pk])).content.decode()


def test_cancelling_a_running_job_while_redis_is_down_records_it_on_the_row(member_client, team, llama, dataset,
                                                                           settings):
    from django.utils import timezone

    job = make_job(team, llama, dataset, state="running", heartbeat_at=timezone.now())
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1: every Redis call is refused
    response = member_client.post(reverse("jobs:cancel", args=[job.pk]), follow=True)
    assert response.status_code == 200
    assert "Stopping at the next step; the last checkpoint is kept." in response.content.decode()
    job.refresh_from_db()
    assert job.state == states.RUNNING and job.cancel_requested_at is not None
    assert "Stopping…" in response.content.decode()  # the page it lands on, rendered without Redis too


# --- a silent worker ---------------------------------------------------------------------------------------------

def test_a_running_job_whose_worker_went_silent_says_since_when_on_its_page_and_in_the_api(
        member_client, team, llama, dataset):
    from datetime import timedelta

    from django.utils import timezone

    from webapp.accounts.tokens import issue_token
    from webapp.jobs import conf

    beat = timezone.now() - timedelta(seconds=conf.HEARTBEAT_TIMEOUT_S + 60)
    silent = make_job(team, llama, dataset, state="running", worker_name="gpu-7@rack2", heartbeat_at=beat)
    alive = make_job(team, llama, dataset, state="running", worker_name="gpu-8@rack2", heartbeat_at=timezone.now())
    page = member_client.get(reverse("jobs:detail", args=[silent.pk])).content.decode()
    assert "No heartbeat from worker <strong>gpu-7@rack2</strong> since" in page
    assert f'<time datetime="{timezone.localtime(beat).strftime("%Y-%m-%dT%H:%M:%S")}' in page
    assert "No heartbeat" not in member_client.get(reverse("jobs:detail", args=[alive.pk])).content.decode()

    _, secret = issue_token(member_client.user, team, "silent")
    bearer, client = {"HTTP_AUTHORIZATION": f"Bearer {secret}"}, Client()  # the API's own client: a token only
    assert client.get(f"/api/jobs/{silent.pk}", **bearer).json()["worker_silent_since"] == beat.isoformat()
    assert client.get(f"/api/jobs/{alive.pk}", **bearer).json()["worker_silent_since"] is None


def test_cancelling_a_running_job_whose_worker_is_silent_cancels_it_at_once(member_client, team, llama, dataset):
    from datetime import timedelta

    from django.utils import timezone

    job = make_job(team, llama, dataset, state="running", heartbeat_at=timezone.now() - timedelta(hours=1))
    member_client.post(reverse("jobs:cancel", args=[job.pk]))
    job.refresh_from_db()
    assert job.state == states.CANCELLED


# --- progress feeds --------------------------------------------------------------------------------------------

def test_the_progress_endpoint_prefers_redis_latest_step_while_running(member_client, team, llama, dataset):
    job = make_job(team, llama, dataset, state="running", progress={"step": 2, "total_steps": 10},
                   history=[{"step": 1, "loss": 3.0, "lr": 0.1}, {"step": 2, "loss": 2.5, "lr": 0.1}])
    live.publish(job.pk, {"type": "step", "step": 4, "total_steps": 10, "loss": 2.0, "lr": 0.1,
                          "tokens_per_s": 100.0, "eta_s": 6.0, "elapsed_s": 4.0})
    data = member_client.get(reverse("jobs:progress", args=[job.pk]) + "?since=1").json()
    assert data["state"] == "running" and data["progress"]["step"] == 4 and data["progress"]["loss"] == 2.0
    assert data["history"] == [{"step": 2, "loss": 2.5, "lr": 0.1}]


def test_the_snapshot_carries_the_queue_position_which_moves_up_as_jobs_ahead_start(member_client, team, llama,
                                                                                    dataset):
    first, second, third = (make_job(team, llama, dataset, name=name) for name in ("first", "second", "third"))
    url = reverse("jobs:progress", args=[third.pk])
    assert member_client.get(url).json()["position"] == 3
    states.move(first, states.RUNNING)
    assert member_client.get(url).json()["position"] == 2
    states.move(second, states.CANCELLED)
    assert member_client.get(url).json()["position"] == 1
    assert member_client.get(reverse("jobs:progress", args=[first.pk])).json()["position"] is None
    stream = member_client.get(reverse("jobs:events", args=[third.pk]))
    first_chunk = next(iter(stream.streaming_content)).decode()
    stream.close()
    assert json.loads(first_chunk.split("data: ", 1)[1])["position"] == 1


def test_the_event_stream_sends_a_snapshot_then_relays_redis_until_the_job_ends(member_client, team, llama,
                                                                                dataset):
    job = make_job(team, llama, dataset, state="running")

    def publish_once_subscribed():
        # The view subscribes when the stream is first read: an event published before that is lost, so wait
        # until Redis counts its subscriber, however slow the machine (after 30 s publish anyway: the test then
        # fails on the missing events instead of hanging).
        name = live.channel(job.pk)
        deadline = time.monotonic() + 30
        while live.client().pubsub_numsub(name)[0][1] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        live.publish(job.pk, {"type": "step", "step": 1, "total_steps": 2, "loss": 1.5})
        live.publish(job.pk, {"type": "log", "line": "hello"})
        live.publish_state(job.pk, "running", "succeeded", "training finished")

    threading.Thread(target=publish_once_subscribed).start()
    response = member_client.get(reverse("jobs:events", args=[job.pk]))
    assert response["Content-Type"] == "text/event-stream"
    chunks = [c.decode() for c in response.streaming_content]
    assert chunks[0].startswith("retry: ") and "event: snapshot" in chunks[0]
    events = [json.loads(c.removeprefix("data: ")) for c in chunks[1:] if c.startswith("data: ")]
    assert [e["type"] for e in events] == ["step", "log", "state"]
    assert events[0]["loss"] == 1.5 and events[2]["state"] == "succeeded"


def test_the_stream_of_a_finished_job_is_just_its_snapshot(member_client, team, llama, dataset):
    job = make_job(team, llama, dataset, state="succeeded")
    chunks = list(member_client.get(reverse("jobs:events", args=[job.pk])).streaming_content)
    assert len(chunks) == 1 and b'"terminal": true' in chunks[0]


# --- isolation --------------------------------------------------------------------------------------------------

def test_every_job_page_of_another_team_is_a_404(member_client, make_member, llama):
    bob = make_member("bob", "Team B")
    other_team = bob.teams.get()
    theirs = make_job(other_team, llama, stored_dataset(other_team, completion_rows(), task="causal-lm"),
                      name="bobs secret run")
    for name in ("detail", "progress", "events"):
        assert member_client.get(reverse(f"jobs:{name}", args=[theirs.pk])).status_code == 404, name
    assert member_client.post(reverse("jobs:cancel", args=[theirs.pk])).status_code == 404
    assert member_client.get(reverse("jobs:create") + f"?clone={theirs.pk}").status_code == 404
    assert theirs.name not in member_client.get(reverse("jobs:list")).content.decode()
    theirs.refresh_from_db()
    assert theirs.state == states.QUEUED


def test_job_pages_need_a_signed_in_user(client, db):
    for url in (reverse("jobs:list"), reverse("jobs:create"), reverse("jobs:estimate"),
                reverse("jobs:detail", args=[1]), reverse("jobs:progress", args=[1]), reverse("jobs:events", args=[1])):
        response = client.get(url)
        assert response.status_code == 302 and response.url.startswith(reverse("login")), url
