"""Routing by worker class on real workers: a job that asks for a class runs on a worker serving `train.<class>`
and records its name, also after waiting for its dataset (the task's retries stay on the class's queue), while a
job of a class nobody serves, and one for any training worker when no worker serves plain `train`, wait on their
own queues; the stale-job sweep sends a lost job back to its class's queue."""
import base64
import json
import os
from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django.utils import timezone

from jobs_helpers import completion_rows, make_job, stored_dataset, tiny_entry, wait_for
from worker_process import WorkerProcess

from webapp.jobs import queue, routing
from webapp.jobs.models import Job
from webapp.ops import checks
from webapp.teams.models import Team
from workers.celery_app import app
from workers.stale_job_tasks import priority_lists, sweep_stale_jobs

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
CLASS = "gpu-routing"
SETTINGS = {"max_steps": 2, "batch_size": 4, "max_length": 48, "eval_fraction": 0.2, "lr": 1e-3,
            "lora": {"rank": 2, "alpha": 4.0, "dropout": 0.0, "targets": "attention", "rslora": False}}


@pytest.fixture
def team(db):
    return Team.objects.get_or_create(name="Routers", slug="routers")[0]


@pytest.fixture
def class_worker(celery_worker, session_worker_paused, tmp_path):
    """The only live worker: it serves class gpu-routing's queue and nothing else."""
    worker = WorkerProcess(celery_worker.env, tmp_path / "class-worker.log", queues=f"train.{CLASS}",
                           concurrency=1, name=f"{CLASS}-{os.getpid()}@localhost")
    yield worker.start()
    worker.stop()


def waiting_job_ids(queue_name: str) -> list[int]:
    """The job ids of the training tasks waiting in a queue, read from the broker's lists (one per priority)."""
    return [json.loads(base64.b64decode(json.loads(message)["body"]))[0][0]
            for listed in queue_lists(queue_name) for message in broker().lrange(listed, 0, -1)]


def broker():
    return redis.Redis.from_url(settings.REDIS_URL)


def queue_lists(queue_name: str) -> list[str]:
    with app.connection_for_read() as connection:
        return priority_lists(connection.default_channel, queue_name)


def finished(job):
    return wait_for(lambda: (row := Job.objects.get(pk=job.pk)).is_terminal and row, timeout_s=180,
                    what=f"job {job.pk} to finish")


def test_a_job_runs_on_a_worker_of_its_class_while_jobs_for_other_queues_keep_waiting(class_worker, team, tmp_path):
    model = tiny_entry("llama", tmp_path / "models")
    dataset = stored_dataset(team, completion_rows(), task="causal-lm")
    validating = stored_dataset(team, completion_rows(), task="causal-lm", status="validating")
    unserved = make_job(team, model, dataset, name="a class nobody serves", worker_class="gpu-none",
                        settings=SETTINGS)
    anywhere = make_job(team, model, dataset, name="any training worker", settings=SETTINGS)
    gated = make_job(team, model, validating, name="the class, once its data is valid", state="validating",
                     worker_class=CLASS, settings=SETTINGS)
    routed = make_job(team, model, dataset, name="the class", worker_class=CLASS, settings=SETTINGS)
    for job in (unserved, anywhere, gated, routed):  # the routed one last: the others wait longer than it runs
        queue.submit(job)
    assert routing.classes_of(checks.workers()) == [CLASS]

    done = finished(routed)
    assert done.state == "succeeded", f"{done.error}\n{class_worker.log()[-4000:]}"
    assert done.worker_name == class_worker.name
    wait_for(lambda: "Retry in" in class_worker.log(), timeout_s=30, what="the gated job's task to retry")
    type(validating).objects.filter(pk=validating.pk).update(status="ready")
    done = finished(gated)
    assert done.state == "succeeded" and done.worker_name == class_worker.name, done.error

    for job in (unserved, anywhere):
        job.refresh_from_db()
        assert job.state == "queued" and job.worker_name == ""
    assert waiting_job_ids("train.gpu-none") == [unserved.pk]
    assert anywhere.pk in waiting_job_ids("train")
    for job in (unserved, anywhere):  # so that no worker of a later test runs them
        assert queue.cancel(job, "the test") == "cancelled"


def test_the_sweep_sends_a_job_that_lost_its_worker_back_to_its_class_queue(team, tmp_path):
    model = tiny_entry("llama", tmp_path / "models")
    dataset = stored_dataset(team, completion_rows(), task="causal-lm")
    lost = make_job(team, model, dataset, state="running", worker_class="gpu-lost", worker_name="gone@nowhere",
                    heartbeat_at=timezone.now() - timedelta(hours=1))
    broker().delete(*queue_lists("train.gpu-lost"))
    sweep_stale_jobs()  # (or a live worker's sweeper got there first: either way, one message)
    assert waiting_job_ids("train.gpu-lost") == [lost.pk]
    broker().delete(*queue_lists("train.gpu-lost"))  # no worker serves it: nothing else would take it away
