"""Load on the job list and a job page: N jobs in a temporary SQLite database (or the empty database
--database-url names, e.g. PostgreSQL), gunicorn on loopback, C concurrent clients for a bounded time. Prints
requests/s, p50/p95 latency, errors, the SQL queries per page at N/10 and N jobs (equal counts: no N+1), the
machine's load average before and after (the clients run on the same machine as the server), and the CPU each side
spent per request under load (after a few seconds of warm-up, not counted): the gunicorn processes, PostgreSQL's
server processes for this database, and the load generator. On a busy shared machine those say more than the wall
figures do.

On PostgreSQL the job table is vacuumed and analyzed after the bulk insert, as autovacuum does to a table within a
minute or so of such a change: without statistics the planner takes 10,000 rows for a handful and sorts them all
for every page.

  .venv/bin/python benchmarks/web_load.py [--jobs 1000] [--clients 50] [--seconds 20] [--workers 2]
                                          [--database-url postgres://postgres@127.0.0.1:5432/web_load]
"""
from __future__ import annotations

import argparse
import http.client
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
WARM_UP_S = 3  # of load before the measured run, not counted


def setup_django(folder: Path, database_url: str | None = None) -> dict:
    env = dict(os.environ, VAR_DIR=str(folder), DATABASE_URL=database_url or f"sqlite:///{folder}/db.sqlite3",
               DJANGO_SETTINGS_MODULE="webapp.settings", DEBUG="0", LOG_LEVEL="WARNING")
    os.environ.update(env)
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    return env


def make_jobs(team, count: int, start: int) -> None:
    from webapp.catalog.models import BaseModel
    from webapp.datasets.models import Dataset
    from webapp.jobs.models import Job

    model = BaseModel.objects.get_or_create(name="bench model", defaults={"source": "demo/bench", "status": "ready"})[0]
    dataset = Dataset.objects.get_or_create(team=team, name="bench data", defaults={
        "file": "datasets/bench.jsonl", "status": "ready", "task": "causal-lm", "format": "prompt_completion"})[0]
    states = ("queued", "running", "succeeded", "failed", "cancelled")
    Job.objects.bulk_create(Job(team=team, name=f"job {i}", base_model=model, dataset=dataset, task="causal-lm",
                                settings={}, state=states[i % len(states)], progress={"step": 3, "total_steps": 10})
                            for i in range(start, start + count))


def analyze_jobs() -> None:
    """Vacuum and analyze the job table on PostgreSQL (what autovacuum does soon after a bulk insert)."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE jobs_job")


def cpu_seconds(processes) -> dict[int, float]:
    """{pid: user + system CPU seconds} of the processes still alive."""
    seconds = {}
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        seconds[process.pid] = times.user + times.system
    return seconds


def database_processes(database: str) -> list:
    """PostgreSQL's server processes for connections to `database` (their title names it)."""
    title = re.compile(rf"^postgres: .*\b{re.escape(database)}\b")
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if title.match(cmdline):
            found.append(process)
    return found


def spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between two cpu_seconds() readings (a process that started in between counts whole)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def queries_per_page(client, job_id: int) -> tuple[int, int]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    counts = []
    for url in ("/jobs/", f"/jobs/{job_id}/"):
        with CaptureQueriesContext(connection) as captured:
            assert client.get(url).status_code == 200, url
        counts.append(len(captured))
    return tuple(counts)


def cpu_ms_per_page(client, url: str, rounds: int = 20) -> float:
    """CPU milliseconds this process spends serving `url` through Django's test client (no network, no server)."""
    client.get(url)
    started = time.process_time()
    for _ in range(rounds):
        client.get(url)
    return (time.process_time() - started) / rounds * 1000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def load(port: int, cookie: str, urls: list[str], clients: int, seconds: float) -> tuple[list[float], int]:
    latencies, errors, lock = [], [0], threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(offset: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        i = offset
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            try:
                connection.request("GET", urls[i % len(urls)], headers={"Cookie": cookie})
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except OSError:
                ok = False
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            with lock:
                latencies.append(time.perf_counter() - started) if ok else None
                errors[0] += not ok
            i += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (8 threads each)")
    parser.add_argument("--database-url", help="an empty database of its own (default: a temporary SQLite file)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="loraworks-web-load-"))
    env = setup_django(folder, args.database_url)
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client

    from webapp.teams.accounts import add_user_to_team
    from webapp.teams.models import Team

    if get_user_model().objects.exists():
        sys.exit("the database is not empty: give --database-url an empty database of its own")
    get_user_model().objects.create_user("bench", password="bench-password-1")
    add_user_to_team("bench", "Bench", "member")
    team = Team.objects.get(name="Bench")
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(get_user_model().objects.get(username="bench"))
    small = max(1, args.jobs // 10)
    make_jobs(team, small, 0)
    from webapp.jobs.models import Job

    first = Job.objects.order_by("pk").first().pk
    before = queries_per_page(client, first)
    make_jobs(team, args.jobs - small, small)
    analyze_jobs()
    after = queries_per_page(client, first)
    cpu_ms = [cpu_ms_per_page(client, url) for url in ("/jobs/", f"/jobs/{first}/")]
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "webapp.wsgi", "-c", "python:webapp.gunicorn_conf",
                               "--bind", f"127.0.0.1:{port}", "--workers", str(args.workers), "--log-level", "warning"],
                              cwd=ROOT, env=env)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        urls = ["/jobs/", f"/jobs/{first}/"]
        web = psutil.Process(server.pid)
        while len(web.children()) < args.workers and server.poll() is None:
            time.sleep(0.2)
        load(port, cookie, urls, args.clients, WARM_UP_S)  # every worker booted, connected and warm
        web = [web, *web.children(recursive=True)]
        database = settings.DATABASES["default"]["NAME"] if "postgresql" in settings.DATABASES["default"]["ENGINE"] \
            else None
        web_cpu, db_cpu = cpu_seconds(web), cpu_seconds(database_processes(database) if database else [])
        load_before, clients_cpu = os.getloadavg(), time.process_time()
        latencies, errors = load(port, cookie, urls, args.clients, args.seconds)
        load_after, clients_cpu = os.getloadavg(), time.process_time() - clients_cpu
        web_cpu = spent(web_cpu, cpu_seconds(web))
        db_cpu = spent(db_cpu, cpu_seconds(database_processes(database) if database else []))
    finally:
        server.terminate()
        server.wait(timeout=30)
    latencies.sort()
    p95 = latencies[int(0.95 * (len(latencies) - 1))] if latencies else float("nan")
    print(f"jobs={args.jobs} clients={args.clients} seconds={args.seconds} gunicorn={args.workers}x8 threads "
          f"database={settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]} cpus={os.cpu_count()}")
    print("load average (1, 5, 15 min) before: " + " ".join(f"{x:.2f}" for x in load_before)
          + ", after: " + " ".join(f"{x:.2f}" for x in load_after))
    print(f"{'page':<12}{'queries@' + str(small):>14}{'queries@' + str(args.jobs):>16}{'CPU ms in-process':>19}")
    print(f"{'job list':<12}{before[0]:>14}{after[0]:>16}{cpu_ms[0]:>19.1f}")
    print(f"{'job page':<12}{before[1]:>14}{after[1]:>16}{cpu_ms[1]:>19.1f}")
    print(f"{'requests':>10}{'req/s':>10}{'p50 ms':>10}{'p95 ms':>10}{'errors':>8}")
    print(f"{len(latencies):>10}{len(latencies) / args.seconds:>10.1f}"
          f"{statistics.median(latencies) * 1000 if latencies else float('nan'):>10.1f}{p95 * 1000:>10.1f}{errors:>8}")
    served = max(1, len(latencies) + errors)
    print(f"CPU ms per request under load: server (gunicorn) {web_cpu / served * 1000:.1f}, database "
          f"{db_cpu / served * 1000:.1f}{'' if database else ' (SQLite: inside the server)'}, "
          f"load generator {clients_cpu / served * 1000:.1f}")


if __name__ == "__main__":
    main()
