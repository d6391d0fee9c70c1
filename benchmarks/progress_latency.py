"""How long a training step takes to reach the job page: worker-side publish -> Redis -> SSE view -> HTTP client.

Starts the real web server (gunicorn, gthread workers, like ./run.sh) on a throw-away SQLite database, opens
`--clients` server-sent-event streams on one running job's /jobs/<id>/events/ as a signed-in user, and publishes
`--steps` steps through the worker's own reporter (workers.progress.JobReporter, which also writes the database
every few seconds, as in a real run). Each event carries its publish time; each client notes when it read it.
Prints p50/p95/max latency and exits 1 if p95 is 1 s or more (the issue's bound).

    .venv/bin/python benchmarks/progress_latency.py [--steps 300] [--rate 20] [--clients 3]

Uses Redis at $BENCH_REDIS_URL (default redis://127.0.0.1:6379/12), never flushing it.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def configure(var_dir: Path) -> dict:
    env = {"VAR_DIR": str(var_dir), "DATABASE_URL": f"sqlite:///{var_dir / 'bench.sqlite3'}",
           "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12"),
           "DJANGO_SETTINGS_MODULE": "webapp.settings", "LOG_LEVEL": "WARNING"}
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return env


def make_running_job():
    """A user in a team with one running job; returns (job, session cookie)."""
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
    from django.contrib.sessions.backends.db import SessionStore

    from webapp.catalog.models import BaseModel
    from webapp.datasets.models import Dataset
    from webapp.jobs import states
    from webapp.jobs.models import Job
    from webapp.teams.accounts import add_user_to_team
    from webapp.teams.models import Team

    user = get_user_model().objects.create_user("bench", password="bench-password-1")
    add_user_to_team("bench", "Bench team", "owner")
    team = Team.objects.get(name="Bench team")
    model = BaseModel.objects.get(source="demo/tiny-lm")
    dataset = Dataset.objects.create(team=team, name="d", original_filename="d.jsonl", file="datasets/d.jsonl",
                                     status="ready", task="causal-lm")
    job = Job.objects.create(team=team, name="bench", base_model=model, dataset=dataset, task="causal-lm",
                             state=states.QUEUED)
    states.move(job, states.RUNNING, reason="benchmark")
    session = SessionStore()
    session[SESSION_KEY], session[BACKEND_SESSION_KEY] = str(user.pk), settings.AUTHENTICATION_BACKENDS[0]
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return job, f"{settings.SESSION_COOKIE_NAME}={session.session_key}"


def start_server(env: dict, port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "webapp.wsgi", "--bind", f"127.0.0.1:{port}", "--worker-class",
         "gthread", "--workers", "2", "--threads", "8", "--log-level", "warning"],
        cwd=ROOT, env={**os.environ, **env}, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("gunicorn did not start")


class StreamClient(threading.Thread):
    """Reads one SSE stream; records (publish time, receive time) of every step event."""

    def __init__(self, port: int, path: str, cookie: str):
        super().__init__(daemon=True)
        self.port, self.path, self.cookie = port, path, cookie
        self.ready = threading.Event()
        self.samples: list[float] = []
        self.error: Exception | None = None

    def run(self):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            conn.request("GET", self.path, headers={"Cookie": self.cookie, "Accept": "text/event-stream"})
            response = conn.getresponse()
            if response.status != 200:
                raise RuntimeError(f"{self.path} answered {response.status}")
            while True:
                line = response.readline()
                if not line:
                    return
                if line.startswith(b"event: snapshot"):
                    self.ready.set()
                if not line.startswith(b"data: ") or not self.ready.is_set():
                    continue
                received = time.time()
                event = json.loads(line[6:])
                if event.get("type") == "step":
                    self.samples.append(received - event["t"])
                elif event.get("type") == "state" and event.get("state") == "succeeded":
                    return
        except Exception as error:  # reported by main
            self.error = error
            self.ready.set()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rate", type=float, default=20.0, help="steps published per second")
    parser.add_argument("--clients", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="progress-latency-") as tmp:
        env = configure(Path(tmp))
        job, cookie = make_running_job()
        port = free_port()
        server = start_server(env, port)
        try:
            clients = [StreamClient(port, f"/jobs/{job.pk}/events/", cookie) for _ in range(args.clients)]
            for client in clients:
                client.start()
            for client in clients:
                client.ready.wait(30)
            from webapp.jobs import states
            from workers.progress import JobReporter

            reporter = JobReporter(job)
            for step in range(1, args.steps + 1):
                reporter.on_step(step, args.steps, 2.0 - step / args.steps, 2e-4, 1000.0, (args.steps - step) / args.rate)
                time.sleep(1 / args.rate)
            reporter.flush()
            states.move(job, states.SUCCEEDED, reason="benchmark done")
            for client in clients:
                client.join(30)
        finally:
            server.terminate()
            server.wait(10)
    errors = [c.error for c in clients if c.error]
    if errors:
        raise SystemExit(f"a stream failed: {errors[0]}")
    samples = [s for c in clients for s in c.samples]
    expected = args.steps * args.clients
    p50, p95 = percentile(samples, 0.5), percentile(samples, 0.95)
    print(f"progress latency, worker publish -> SSE client over HTTP (gunicorn gthread), "
          f"{args.clients} clients x {args.steps} steps at {args.rate:g}/s: received {len(samples)}/{expected}")
    print(f"  p50 {p50 * 1000:.1f} ms   p95 {p95 * 1000:.1f} ms   max {max(samples) * 1000:.1f} ms   "
          f"mean {statistics.mean(samples) * 1000:.1f} ms")
    ok = p95 < 1.0 and len(samples) == expected
    print("PASS: p95 under 1 s" if ok else "FAIL: p95 must be under 1 s and every step must arrive")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
