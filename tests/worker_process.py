"""A real Celery worker in a subprocess, for integration tests: WorkerProcess and the database URL it needs.

Lives outside conftest.py so tests that start extra workers can `from worker_process import WorkerProcess`; and
`train_worker`, a `train` worker beside the session's with extra environment, with `wait_terminal` for its jobs.
"""
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class WorkerProcess:
    """A real Celery worker in its own process group, serving `queues` (all, by default) against the test database
    and Redis; `name` must differ from every other live worker's."""

    def __init__(self, env: dict, log_path, queues: str = "default,train,infer", concurrency: int = 2,
                 name: str | None = None):
        self.env, self.log_path, self.queues, self.concurrency = env, log_path, queues, concurrency
        self.name = name or f"test-{os.getpid()}@localhost"
        self.process = None

    def start(self, timeout_s: float = 60):
        from workers import app

        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", self.queues, "-n", self.name,
             "--concurrency", str(self.concurrency), "--loglevel", "INFO", "--without-gossip", "--without-mingle"],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"celery worker exited; see {self.log_path}")
            if app.control.ping(destination=[self.name], timeout=0.5):
                return self
        raise RuntimeError(f"celery worker did not answer within {timeout_s} s; see {self.log_path}")

    def kill(self):
        """SIGKILL the whole worker (main process and pool), as a lost machine would."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self):
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return Path(self.log_path).read_text(errors="replace")


def database_url(settings_dict: dict) -> str:
    if settings_dict["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{Path(settings_dict['NAME']).resolve()}"
    auth = settings_dict["USER"] + (f":{settings_dict['PASSWORD']}" if settings_dict["PASSWORD"] else "")
    return f"postgres://{auth}@{settings_dict['HOST'] or 'localhost'}:{settings_dict['PORT'] or 5432}/{settings_dict['NAME']}"


@contextmanager
def train_worker(celery_worker, log_path: Path, **env):
    """A `train` worker of concurrency 1 beside the session's, with the session worker's environment plus `env`."""
    from jobs_helpers import wait_for

    worker = WorkerProcess(dict(celery_worker.env, **env), log_path, queues="train", concurrency=1,
                           name=f"train-{log_path.stem}-{os.getpid()}@localhost")
    try:
        yield worker.start()
        # Stopping it mid-task would requeue that task's message for the session worker to find later.
        wait_for(lambda: is_idle(worker), 30, what="the worker to finish its last task")
    finally:
        worker.stop()


def is_idle(worker) -> bool:
    from workers.celery_app import app

    try:
        return (app.control.inspect([worker.name], timeout=1).active() or {}).get(worker.name) == []
    except app.connection_for_read().connection_errors:  # a pooled connection from before a Redis restart
        return False


def wait_terminal(job, worker, timeout_s: float = 300):
    """The job once it has ended. The limit only bounds a hang: a 1,500-step job takes ~20 s on a quiet machine
    but minutes on a loaded one, and a busy machine must not fail the test."""
    from jobs_helpers import wait_for
    from webapp.jobs.models import Job

    try:
        return wait_for(lambda: (row := Job.objects.get(pk=job.pk)).is_terminal and row, timeout_s,
                        what=f"job {job.pk} to finish")
    except AssertionError:
        row = Job.objects.get(pk=job.pk)
        raise AssertionError(f"job is {row.state}: {row.error}\n{row.log_tail}\n{worker.log()[-4000:]}") from None
