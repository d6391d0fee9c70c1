"""Worker classes on the pages and the API, against a real worker serving `train.gpu-test`: the create form offers
only the classes a live worker serves, a class nobody serves is refused on its field (page and API), Clone keeps
the class, a routed job reports the worker that ran it, a queued job's place counts its own queue only, and the
operations page lists the class queues."""
import os
import re

import pytest
import redis
from django.conf import settings
from django.urls import reverse

from jobs_helpers import completion_rows, make_job, stored_dataset
from test_api_schema import api, assert_matches_schema  # noqa: F401  (fixtures)
from worker_process import WorkerProcess
from webapp.jobs import queue
from webapp.jobs.models import Job
from webapp.teams.models import Team

CLASS = "gpu-test"
SMALL = {"lora": {"rank": 2, "alpha": 4, "targets": "attention"},
         "training": {"max_steps": 2, "batch_size": 4, "max_length": 48, "lr": 1e-3}}


@pytest.fixture(scope="module")
def class_worker(celery_worker, tmp_path_factory):
    """A second worker, serving the training queue of class gpu-test only (the session's serves no class)."""
    worker = WorkerProcess(celery_worker.env, tmp_path_factory.mktemp("class-worker") / "worker.log",
                           queues=f"train.{CLASS}", concurrency=1, name=f"{CLASS}-{os.getpid()}@localhost")
    yield worker.start()
    worker.stop()


@pytest.fixture
def team(db, make_member):
    make_member("alice", "Team A")
    return Team.objects.get(name="Team A")


@pytest.fixture
def dataset(team):
    return stored_dataset(team, completion_rows(), task="causal-lm")


def form_data(model, dataset, **changes) -> dict:
    return {"name": "routed", "base_model": model.pk, "dataset": dataset.pk, "task": "", "rank": 2, "alpha": 4,
            "dropout": 0, "targets": "attention", "custom_targets": "", "epochs": 1, "max_steps": 2, "lr": 1e-3,
            "batch_size": 4, "grad_accum": 1, "max_length": 48, "warmup": 0, "eval_fraction": 0.1, "seed": 0,
            **changes}


def class_options(page: str) -> list[tuple[str, str]]:
    select = re.search(r'<select name="worker_class".*?</select>', page, re.S).group(0)
    return re.findall(r'<option value="([^"]*)"[^>]*>([^<]*)</option>', select)


def test_the_form_offers_any_worker_and_only_the_classes_a_live_worker_serves(member_client, class_worker):
    page = member_client.get(reverse("jobs:create")).content.decode()
    assert class_options(page) == [("", "Any training worker"), (CLASS, CLASS)]


def test_a_job_asks_for_a_live_class_and_its_clone_asks_for_it_too(member_client, class_worker, llama, dataset):
    response = member_client.post(reverse("jobs:create"), form_data(llama, dataset, worker_class=CLASS))
    job = Job.objects.get()
    assert response.status_code == 302 and job.worker_class == CLASS
    clone = member_client.get(reverse("jobs:create") + f"?clone={job.pk}")
    assert clone.context["form"].initial["worker_class"] == CLASS
    assert f'<option value="{CLASS}" selected>' in clone.content.decode()


def test_a_class_no_live_worker_serves_is_refused_on_its_field(member_client, class_worker, llama, dataset):
    response = member_client.post(reverse("jobs:create"), form_data(llama, dataset, worker_class="gpu-gone"))
    assert response.status_code == 200 and not Job.objects.exists()
    assert response.context["form"].errors["worker_class"] == [
        "No live worker serves the class “gpu-gone” right now: pick a class listed here, or any training worker."]
    assert class_options(response.content.decode())[1:] == [(CLASS, CLASS)]


def test_a_job_for_any_worker_is_created_without_asking_the_workers(member_client, llama, dataset, monkeypatch):
    monkeypatch.setattr("webapp.ops.checks.workers", lambda: pytest.fail("the workers were asked"))
    response = member_client.post(reverse("jobs:create"), form_data(llama, dataset, worker_class=""))
    assert response.status_code == 302 and Job.objects.get().worker_class == ""


def test_the_api_runs_a_routed_job_on_its_class_and_reports_the_worker_that_ran_it(api, class_worker, llama):
    team = Team.objects.get(name="Team A")
    dataset = stored_dataset(team, completion_rows(), task="causal-lm")
    created = api("POST", "/api/jobs", json_body={"base_model": llama.pk, "dataset": dataset.pk,
                                                  "worker_class": CLASS, **SMALL})
    assert created.status_code == 201, created.content
    done = api.wait_for(f"/api/jobs/{created.json()['id']}",
                        lambda job: job["status"] in ("succeeded", "failed", "cancelled"), timeout_s=180)
    assert done["status"] == "succeeded", (done["error"], class_worker.log()[-3000:])
    assert done["worker_class"] == CLASS and done["worker_name"] == class_worker.name
    assert_matches_schema(api("GET", f"/api/jobs/{done['id']}"), "/api/jobs/{job_id}")
    listed = api("GET", "/api/jobs").json()["items"]
    assert [(j["worker_class"], j["worker_name"]) for j in listed] == [(CLASS, class_worker.name)]


@pytest.mark.parametrize("value,message", [
    ("gpu-gone", "worker_class: No live worker serves the class “gpu-gone” right now"),
    (7, "worker_class must be a string"),
], ids=["unserved", "not-a-string"])
def test_the_api_refuses_a_class_no_live_worker_serves_naming_the_field(api, class_worker, llama, value, message):
    dataset = stored_dataset(Team.objects.get(name="Team A"), completion_rows(), task="causal-lm")
    refused = api("POST", "/api/jobs", json_body={"base_model": llama.pk, "dataset": dataset.pk,
                                                  "worker_class": value, **SMALL})
    assert refused.status_code == 400 and refused.json()["error"]["field"] == "worker_class"
    assert refused.json()["error"]["message"].startswith(message)
    assert_matches_schema(refused, "/api/jobs", "post")
    assert not Job.objects.exists()


def test_a_queued_jobs_place_counts_only_jobs_ahead_on_its_own_queue(member_client, llama, dataset, team):
    make_job(team, llama, dataset, name="any worker, first")
    make_job(team, llama, dataset, name="gpu-gone, first", worker_class="gpu-gone")
    second = make_job(team, llama, dataset, name="gpu-gone, second", worker_class="gpu-gone")
    page = member_client.get(reverse("jobs:detail", args=[second.pk])).content.decode()
    assert 'Position <strong data-live="position">2</strong> in the gpu-gone queue' in page
    assert "No live worker serves the class gpu-gone right now: the job waits until one starts." in page
    assert "Worker class: <strong>gpu-gone</strong>" in page


def test_the_job_page_and_list_say_which_worker_ran_it(member_client, llama, dataset, team):
    job = make_job(team, llama, dataset, name="done", state="succeeded", worker_class=CLASS,
                   worker_name="train-large@gpu-7")
    page = member_client.get(reverse("jobs:detail", args=[job.pk])).content.decode()
    assert f"Worker class: <strong>{CLASS}</strong>" in page and "ran on <strong>train-large@gpu-7</strong>" in page
    listed = member_client.get(reverse("jobs:list")).content.decode()
    assert f'train-large@gpu-7<div class="muted">{CLASS}</div>' in listed


def test_the_operations_page_lists_class_queues_served_or_waited_for(member_client, class_worker, llama, dataset,
                                                                     team):
    member_client.user.is_staff = True
    member_client.user.save()
    queue.send(make_job(team, llama, dataset, worker_class="gpu-gone").pk)
    try:
        html = member_client.get("/ops/").content.decode()
    finally:
        redis.Redis.from_url(settings.REDIS_URL).delete("train.gpu-gone")
    rows = re.findall(r"<tr><td>([^<]+)</td><td class=\"num\">([^<]*)</td>\s*<td>(.*?)</td></tr>", html)
    assert ("train.gpu-gone", "1", '<span class="badge failed">no worker</span>') in rows
    assert (f"train.{CLASS}", "0", "yes") in rows
