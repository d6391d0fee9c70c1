"""Fixtures for the worker tests: finished runs' artifacts in storage, and pausing the session's worker for tests
that run their own workers beside it."""
import uuid
from pathlib import Path

import pytest

import finished_jobs


@pytest.fixture
def session_worker_paused(celery_worker):
    """The session's worker serves `default,train,infer` from the local disk: stopped for this test, or it would
    take jobs meant for the test's own workers; started again afterwards for the tests that follow."""
    celery_worker.stop()
    yield
    celery_worker.start()


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
