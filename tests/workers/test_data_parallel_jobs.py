"""Data-parallel jobs on a real Celery worker declared with WORKER_GPUS=2 (on this CPU: 2 gloo processes of one
thread each): a job of its class trains as 2 processes and its adapter matches the same job trained in one
process with twice the batch; a rank killed mid-run ends that run, and the job resumes from its last checkpoint
on the same worker to the same adapter. The tolerance is tests/trainer/test_distributed.py's (ATOL, justified
there)."""
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from data_parallel_checks import CLASS, adapter_of, assert_same_adapter, one_process_adapter, two_gpu_worker
from jobs_helpers import completion_rows, make_job, stored_dataset, tiny_entry, wait_for

from webapp.jobs import live, queue, routing
from webapp.jobs.models import Job
from webapp.ops import checks
from webapp.teams.models import Team

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
LORA = {"rank": 4, "alpha": 8.0, "dropout": 0.0, "targets": "attention", "rslora": False}


def settings_for(batch_size: int, **changes) -> dict:
    return {"max_steps": 6, "batch_size": batch_size, "max_length": 64, "eval_fraction": 0.2, "lr": 1e-2,
            "checkpoint_every": 3, "lora": LORA, **changes}


@pytest.fixture
def team(db):
    return Team.objects.get_or_create(name="Parallel", slug="parallel")[0]


@pytest.fixture
def worker(celery_worker, tmp_path):
    """The only worker of class two-gpus."""
    started = two_gpu_worker(celery_worker.env, tmp_path / "two-gpu-worker.log")
    yield started
    started.stop()


def finished(job, worker):
    done = wait_for(lambda: (row := Job.objects.get(pk=job.pk)).is_terminal and row, timeout_s=600,
                    what=f"job {job.pk} to finish")
    assert done.state == "succeeded", f"{done.error}\n{done.log_tail}\n{worker.log()[-4000:]}"
    return done


def test_a_job_of_a_two_gpu_class_trains_as_two_processes_like_one_process_with_the_whole_batch(
        worker, team, tmp_path):
    model = tiny_entry("llama", tmp_path / "models")
    dataset = stored_dataset(team, completion_rows(), task="causal-lm")
    assert routing.class_capacity(checks.workers(), CLASS)["gpus"] == 2

    job = make_job(team, model, dataset, worker_class=CLASS, settings=settings_for(4))
    queue.submit(job)
    job = finished(job, worker)
    assert job.worker_name == worker.name
    assert job.gpus == 2  # what its GPU-seconds are booked at
    assert job.metrics["processes"] == 2 and job.metrics["global_batch_size"] == 8 and job.metrics["steps"] == 6
    assert [p["step"] for p in job.history if "loss" in p] == [1, 2, 3, 4, 5, 6]  # rank 0 reported every step once
    assert_same_adapter(adapter_of(job), one_process_adapter(job, tmp_path / "one-process"))


def test_a_killed_rank_stops_the_run_and_the_job_resumes_on_its_worker_to_the_same_adapter(
        worker, team, tmp_path):
    model = tiny_entry("llama", tmp_path / "models")
    dataset = stored_dataset(team, completion_rows(), task="causal-lm")
    # lr 1e-3: at 1e-2 for 300 steps this tiny model's training is chaotic enough that float rounding alone (an
    # uninterrupted 2-process run against 1 process) grows to 0.14; at 1e-3 it stays at 1e-7.
    settings = settings_for(4, max_steps=300, checkpoint_every=5, lr=1e-3)
    job = make_job(team, model, dataset, worker_class=CLASS, settings=settings)
    queue.submit(job)
    wait_for(lambda: (live.latest(job.pk) or {}).get("step", 0) >= 12, 300, what="twelve steps")
    ranks = [p for p in psutil.Process(worker.process.pid).children(recursive=True)
             if "trainer.distributed" in p.cmdline()]
    assert len(ranks) == 1  # rank 1; rank 0 is the worker's pool process itself
    ranks[0].kill()

    job = finished(job, worker)
    resumed = job.events.filter(from_state="running", to_state="running")
    assert resumed.count() == 1 and "rank 1 was killed by SIGKILL" in resumed.first().reason
    assert "resuming from the checkpoint at step" in job.log_tail
    assert [p["step"] for p in job.history if "loss" in p] == list(range(1, 301))  # none lost, none repeated
    assert job.metrics["resumed_from_step"] >= 10 and job.metrics["processes"] == 2
    assert_same_adapter(adapter_of(job), one_process_adapter(job, tmp_path / "one-process"))


def test_a_worker_declared_on_several_machines_refuses_to_start_saying_why(celery_worker):
    done = subprocess.run([sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", "train.nodes", "-n",
                           f"nodes-{os.getpid()}@localhost", "--concurrency", "1", "--without-gossip",
                           "--without-mingle"], cwd=Path(__file__).resolve().parents[2],
                          env={**celery_worker.env, "WORKER_NODES": "2"}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "error: WORKER_NODES=2: a job trains on one machine for now (WORKER_GPUS processes on it); set " \
           "WORKER_NODES=1" in done.stderr
