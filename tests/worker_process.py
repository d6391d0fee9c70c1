"""A real Celery worker in a subprocess, for integration tests: WorkerProcess and the database URL it needs.

Lives outside conftest.py so tests that start extra workers can `from worker_process import WorkerProcess`.
"""
import os
import signal
import subprocess
import sys
import time
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
