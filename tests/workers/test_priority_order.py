"""Job priorities on a real worker and broker: jobs sent low, then normal, then high to a queue no worker serves
yet start high, normal, low once a worker (concurrency 1) comes; the queue position the job page showed while
they waited said the same; and each job's worker seconds × GPUs add up to its team's month."""
import os

import pytest

from jobs_helpers import completion_rows, make_job, stored_dataset, tiny_entry, wait_for
from worker_process import WorkerProcess

from webapp.jobs import queue
from webapp.jobs.models import Job
from webapp.teams.models import Team
from webapp.teams.usage import month_gpu_seconds

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
CLASS = "priority-order"
SETTINGS = {"max_steps": 2, "batch_size": 4, "max_length": 48, "eval_fraction": 0.2, "lr": 1e-3,
            "lora": {"rank": 2, "alpha": 4.0, "dropout": 0.0, "targets": "attention", "rslora": False}}


def test_waiting_jobs_start_by_priority_as_their_queue_positions_said(celery_worker, session_worker_paused,
                                                                       tmp_path):
    team = Team.objects.create(name="Prioritisers", slug="prioritisers")
    model = tiny_entry("llama", tmp_path / "models")
    dataset = stored_dataset(team, completion_rows(), task="causal-lm")
    jobs = {}
    for level in ("low", "normal", "high"):  # first come would start low first
        jobs[level] = make_job(team, model, dataset, name=level, priority=level, worker_class=CLASS,
                               settings=SETTINGS)
        queue.submit(jobs[level])
    assert {level: queue.queue_position(job) for level, job in jobs.items()} == {"high": 1, "normal": 2, "low": 3}

    worker = WorkerProcess(celery_worker.env, tmp_path / "worker.log", queues=f"train.{CLASS}", concurrency=1,
                           name=f"{CLASS}-{os.getpid()}@localhost").start()
    try:
        wait_for(lambda: not Job.objects.filter(team=team, state__in=("queued", "running")).exists(),
                 timeout_s=300, what="the three jobs to finish")
    finally:
        worker.stop()
    done = list(Job.objects.filter(team=team))
    assert all(row.state == "succeeded" for row in done), [(row.name, row.error) for row in done]
    assert [row.name for row in sorted(done, key=lambda row: row.started_at)] == ["high", "normal", "low"]
    assert all(row.gpus == 1 and row.gpu_seconds > 0 for row in done)
    assert month_gpu_seconds(team) == pytest.approx(sum(row.gpu_seconds for row in done))
