"""Throughput and memory of one large dataset upload through the web process, to the local folder and to an
S3-compatible store (moto's server on loopback). gunicorn (1 sync worker) serves the app from a temporary SQLite
database; http.client streams a generated JSONL file to the upload view; psutil samples the resident memory of
gunicorn's whole process tree every 50 ms. Prints one row per storage: MB, seconds, MB/s, peak RSS.

  .venv/bin/python benchmarks/upload_throughput.py [--mb 1024] [--storage local,s3]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from http.cookies import SimpleCookie
from pathlib import Path

import psutil

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent / "tests" / "webapp")]
from web_load import ROOT, free_port  # noqa: E402

CHUNK = 1024 * 1024


def write_dataset(path: Path, mb: int) -> int:
    row = (json.dumps({"prompt": "Say something " * 4, "completion": " something " * 8}) + "\n").encode()
    rows = row * (CHUNK // len(row))
    with open(path, "wb") as handle:
        while handle.tell() < mb * CHUNK:
            handle.write(rows)
    return path.stat().st_size


def session_cookie(env: dict) -> str:
    """Migrate the fresh database and sign a user in; returns the session cookie."""
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    script = ("import django; django.setup()\n"
              "from django.contrib.auth import get_user_model; from django.test import Client\n"
              "from webapp.teams.accounts import add_user_to_team\n"
              "get_user_model().objects.create_user('bench', password='bench-password-1')\n"
              "add_user_to_team('bench', 'Bench', 'member')\n"
              "c = Client(HTTP_HOST='127.0.0.1'); c.force_login(get_user_model().objects.get(username='bench'))\n"
              "from django.conf import settings; print(settings.SESSION_COOKIE_NAME + '=' + "
              "c.cookies[settings.SESSION_COOKIE_NAME].value)")
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, check=True, capture_output=True,
                          text=True).stdout.strip().splitlines()[-1]


def tree_rss(process: psutil.Process) -> int:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def upload(port: int, cookie: str, path: Path) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    connection.request("GET", "/datasets/upload/", headers={"Cookie": cookie})
    response = connection.getresponse()
    response.read()
    csrf = SimpleCookie(response.headers["Set-Cookie"])["csrftoken"].value
    boundary = "loraworksbenchboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nbench\r\n--{boundary}\r\n"
            f"Content-Disposition: form-data; name=\"file\"; filename=\"bench.jsonl\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    connection.putrequest("POST", "/datasets/upload/")
    for name, value in (("Cookie", f"{cookie}; csrftoken={csrf}"), ("X-CSRFToken", csrf),
                        ("Content-Type", f"multipart/form-data; boundary={boundary}"), ("Accept", "application/json"),
                        ("Content-Length", str(len(head) + path.stat().st_size + len(tail)))):
        connection.putheader(name, value)
    connection.endheaders()
    connection.send(head)
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            connection.send(chunk)
    connection.send(tail)
    response = connection.getresponse()
    body = response.read()
    if response.status != 200:
        raise RuntimeError(f"upload answered {response.status}: {body[:500]!r}")
    return response.status


def run(storage: str, mb: int, folder: Path, data: Path, extra_env: dict) -> dict:
    home = folder / storage
    env = {**os.environ, "VAR_DIR": str(home), "DATABASE_URL": f"sqlite:///{home}/db.sqlite3", "DEBUG": "0",
           "LOG_LEVEL": "WARNING", "MAX_UPLOAD_MB": str(mb + 16), "STORAGE_BACKEND": storage, **extra_env}
    env.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    cookie = session_cookie(env)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "webapp.wsgi", "--bind", f"127.0.0.1:{port}",
                               "--workers", "1", "--timeout", "600", "--log-level", "warning"], cwd=ROOT, env=env)
    peak, done = [0], threading.Event()

    def sample() -> None:
        process = psutil.Process(server.pid)
        while not done.is_set():
            peak[0] = max(peak[0], tree_rss(process))
            time.sleep(0.05)
    try:
        time.sleep(3)  # gunicorn imports the app
        sampler = threading.Thread(target=sample)
        sampler.start()
        started = time.perf_counter()
        upload(port, cookie, data)
        seconds = time.perf_counter() - started
    finally:
        done.set()
        server.terminate()
        server.wait(timeout=30)
    return {"storage": storage, "mb": data.stat().st_size / CHUNK, "seconds": seconds,
            "mb_per_s": data.stat().st_size / CHUNK / seconds, "peak_rss_mb": peak[0] / CHUNK}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=1024, help="size of the uploaded file in MiB (default 1024)")
    parser.add_argument("--storage", default="local,s3")
    args = parser.parse_args()
    from s3_helpers import make_bucket, moto_endpoint, s3_env

    folder = Path(tempfile.mkdtemp(prefix="loraworks-upload-"))
    data = folder / "bench.jsonl"
    write_dataset(data, args.mb)
    rows = []
    for storage in args.storage.split(","):
        if storage == "s3":
            with moto_endpoint() as endpoint:
                rows.append(run(storage, args.mb, folder, data, s3_env(endpoint, make_bucket(endpoint))))
        else:
            rows.append(run(storage, args.mb, folder, data, {}))
    print(f"{'storage':<8}{'MB':>8}{'seconds':>10}{'MB/s':>8}{'peak RSS MB':>13}")
    for row in rows:
        print(f"{row['storage']:<8}{row['mb']:>8.0f}{row['seconds']:>10.1f}{row['mb_per_s']:>8.1f}"
              f"{row['peak_rss_mb']:>13.0f}")


if __name__ == "__main__":
    main()
