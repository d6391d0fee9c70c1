"""Scale-out: two training workers as separate processes with their own working folders and no shared disk (only
Redis, the database and an S3-compatible store, moto's server on loopback, in common) share a queue of jobs; each
job runs once, on one worker, and its artifacts are in the bucket and download through the web app."""
import io
import os
import zipfile

import boto3
import pytest
import redis
from django.conf import settings
from django.db import connection
from django.test import override_settings

from worker_process import WorkerProcess, database_url
from jobs_helpers import completion_rows, make_job, stored_dataset, tiny_entry, wait_for
from s3_helpers import ACCESS_KEY, REGION, SECRET_KEY, make_bucket, moto_endpoint, s3_env, s3_storages

from webapp.jobs import queue
from webapp.jobs.models import Job
from webapp.teams.models import Team

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
JOBS = 4
SETTINGS = {"max_steps": 4, "batch_size": 4, "max_length": 48, "eval_fraction": 0.2, "lr": 1e-3,
            "checkpoint_every": 2, "lora": {"rank": 2, "alpha": 4.0, "dropout": 0.0, "targets": "attention",
                                            "rslora": False}}


@pytest.fixture
def object_store():
    with moto_endpoint() as endpoint:
        bucket = make_bucket(endpoint)
        with override_settings(STORAGES=s3_storages(endpoint, bucket)):  # the web process on the same bucket
            yield endpoint, bucket


@pytest.fixture
def two_workers(object_store, session_worker_paused, tmp_path):
    """Two `train` workers, each with its own VAR_DIR (working folder) and MEDIA_ROOT, so a file written to a
    local path instead of the bucket would never reach the other worker or the web app."""
    if settings.REDIS_URL.rstrip("/").endswith(("/0", ":6379")):
        pytest.fail("this test flushes its Redis database: run it with ./test.sh (a test Redis database)")
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    workers = []
    for letter in "ab":
        home = tmp_path / f"machine-{letter}"
        env = dict(os.environ, **s3_env(*object_store), DATABASE_URL=database_url(connection.settings_dict),
                   REDIS_URL=settings.REDIS_URL, VAR_DIR=str(home / "var"), MEDIA_ROOT=str(home / "media"),
                   HF_HUB_OFFLINE="1")
        workers.append(WorkerProcess(env, tmp_path / f"worker-{letter}.log", queues="train", concurrency=1,
                                     name=f"train-{letter}-{os.getpid()}@localhost"))
    try:
        for worker in workers:
            worker.start()
        yield workers
    finally:
        for worker in workers:
            worker.stop()


def bucket_keys(endpoint: str, bucket: str, prefix: str) -> list[str]:
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                          region_name=REGION)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def test_two_workers_without_a_shared_disk_each_run_jobs_once_and_the_web_app_serves_their_artifacts(
        object_store, two_workers, member_client, tmp_path):
    team = Team.objects.get(name="Team A")
    model = tiny_entry("llama", tmp_path / "models")
    dataset = stored_dataset(team, completion_rows(), task="causal-lm")
    jobs = [make_job(team, model, dataset, name=f"job {i}", settings=SETTINGS) for i in range(JOBS)]
    for job in jobs:
        queue.submit(job)

    def finished():
        rows = list(Job.objects.filter(pk__in=[j.pk for j in jobs]))
        return rows if all(row.is_terminal for row in rows) else None
    try:
        done = wait_for(finished, timeout_s=480, what=f"{JOBS} jobs to finish")
    except AssertionError:
        states = [(j.pk, j.state, j.worker_name, j.error) for j in Job.objects.filter(pk__in=[j.pk for j in jobs])]
        raise AssertionError(f"{states}\n" + "\n".join(w.log()[-6000:] for w in two_workers)) from None

    names = {worker.name for worker in two_workers}
    for job in done:
        assert job.state == "succeeded", job.error
        starts = [(e.from_state, e.to_state) for e in job.events.all() if e.to_state == "running"]
        assert starts == [("queued", "running")], f"job {job.pk} started {len(starts)} times"
        assert job.worker_name in names
        keys = bucket_keys(*object_store, f"jobs/{job.pk}/")
        assert f"jobs/{job.pk}/metrics.json" in keys and f"jobs/{job.pk}/adapter/adapter_model.safetensors" in keys
    assert {job.worker_name for job in done} == names, "both workers should have taken jobs"
    for letter in "ab":  # nothing landed in a worker's own media folder
        media = tmp_path / f"machine-{letter}" / "media"
        assert not media.exists() or not any(media.rglob("*"))

    job = done[0]
    response = member_client.get(f"/jobs/{job.pk}/download/adapter/")
    assert response.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    weights = [name for name in archive.namelist() if name.endswith("adapter_model.safetensors")]
    client = boto3.client("s3", endpoint_url=object_store[0], aws_access_key_id=ACCESS_KEY,
                          aws_secret_access_key=SECRET_KEY, region_name=REGION)
    stored = client.get_object(Bucket=object_store[1], Key=f"jobs/{job.pk}/adapter/adapter_model.safetensors")
    assert len(weights) == 1 and archive.read(weights[0]) == stored["Body"].read()
    metrics = member_client.get(f"/jobs/{job.pk}/download/metrics/")
    assert metrics.status_code == 200 and b"".join(metrics.streaming_content).startswith(b"{")
