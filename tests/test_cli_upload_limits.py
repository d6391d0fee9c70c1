"""Uploads over MAX_UPLOAD_MB from the command line, against gunicorn on loopback (sync and threaded workers, as a
deployment runs them): the server answers 413 (at once when the Content-Length says so, while streaming otherwise),
the CLI exits 7 naming the limit, and nothing is left in the upload folder, in storage or in the database. And what
the CLI says when a connection is cut with no answer at all, during an upload or a download."""
import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_api_schema import Api
from gunicorn_server import gunicorn_serving
from worker_process import database_url

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(config: Path, *args, timeout=120):
    env = dict(os.environ, LORAWORKS_CONFIG=str(config))
    env.pop("LORAWORKS_TOKEN", None)
    env.pop("LORAWORKS_URL", None)
    done = subprocess.run([sys.executable, "-m", "loraworks_cli", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout.strip(), done.stderr.strip()


@pytest.fixture(params=["sync", "gthread"])
def gunicorn(request, transactional_db, tmp_path, settings):
    """gunicorn serving the app on the test database with MAX_UPLOAD_MB=1; its upload folder is its own TMPDIR."""
    from django.db import connection

    uploads = tmp_path / "uploads"
    uploads.mkdir()
    port = free_port()
    env = dict(os.environ, DATABASE_URL=database_url(connection.settings_dict), REDIS_URL=settings.REDIS_URL,
               VAR_DIR=str(settings.VAR_DIR), MEDIA_ROOT=str(settings.MEDIA_ROOT), MAX_UPLOAD_MB="1",
               TMPDIR=str(uploads))
    with gunicorn_serving(env, port, tmp_path / "gunicorn.log", "--worker-class", request.param,
                          "--timeout", "60") as url:
        yield url, uploads


def stored_files(settings) -> set:
    folder = Path(settings.MEDIA_ROOT) / "datasets"
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def test_an_upload_over_the_limit_exits_7_naming_it_and_keeps_nothing(gunicorn, tmp_path, settings):
    from test_api_schema import new_api

    from webapp.datasets.models import Dataset

    url, uploads = gunicorn
    token = new_api(SimpleNamespace(url=url), "alice", "Team A").token
    config = tmp_path / "cli.json"
    assert run_cli(config, "login", url, "--token", token)[0] == 0
    assert Api(url, token)("GET", "/api/me").json()["limits"] == {"max_upload_mb": 1}
    before = stored_files(settings)
    line = json.dumps({"prompt": "x" * 500, "completion": "y"}) + "\n"
    huge = tmp_path / "huge.jsonl"  # 20 MB: the Content-Length alone says no
    huge.write_text(line * (20 * 2**20 // len(line)))
    code, out, err = run_cli(config, "datasets", "upload", huge)
    assert (code, out) == (7, ""), err
    assert "larger than the upload limit of 1 MB" in err and "[file]" in err
    big = tmp_path / "big.jsonl"  # 1.5 MB: could be two files under the limit, so the stream is read and stopped
    big.write_text(line * (3 * 2**19 // len(line)))
    code, out, err = run_cli(config, "datasets", "upload", big)
    assert (code, out) == (7, ""), err
    assert "big.jsonl is larger than the upload limit of 1 MB" in err
    assert not Dataset.objects.exists()
    assert stored_files(settings) == before and list(uploads.iterdir()) == []
    assert run_cli(config, "whoami")[0] == 0  # the server goes on serving


class CuttingServer(BaseHTTPRequestHandler):
    """Answers /api/me with an upload limit of 1 MB; cuts every upload without an answer (as a proxy in front of a
    server might); sends a download's first bytes of the 1000 it announces, then closes."""

    def do_GET(self):
        if self.path == "/api/me":
            body = json.dumps({"user": "alice", "team": {"id": 1, "name": "Team A"},
                               "token": {"id": 1, "name": "t", "prefix": "lw_x"},
                               "limits": {"max_upload_mb": 1}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"PK" + b"\0" * 98)
        self.close_connection = True

    def do_POST(self):
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, *args):
        pass


@pytest.fixture
def cutting_server(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), CuttingServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = tmp_path / "cli.json"
    url = f"http://127.0.0.1:{server.server_address[1]}"
    assert run_cli(config, "login", url, "--token", "lw_x")[0] == 0
    yield config
    server.shutdown()


def test_an_upload_cut_with_no_answer_is_too_large_when_the_file_is_over_the_announced_limit(cutting_server,
                                                                                             tmp_path):
    big = tmp_path / "big.jsonl"
    big.write_bytes(b'{"text": "x"}\n' * 200_000)  # 2.7 MB
    code, _, err = run_cli(cutting_server, "datasets", "upload", big)
    assert code == 7 and "big.jsonl is 2.7 MB, over the server's upload limit of 1 MB" in err
    small = tmp_path / "small.jsonl"
    small.write_bytes(b'{"text": "x"}\n' * 10)
    code, _, err = run_cli(cutting_server, "datasets", "upload", small)
    assert code == 8 and "cut during the upload" in err


def test_a_download_that_breaks_off_leaves_no_file_and_says_so(cutting_server, tmp_path):
    target = tmp_path / "adapter.zip"
    code, out, err = run_cli(cutting_server, "jobs", "download", 1, "--adapter", "-o", target)
    assert (code, out) == (8, "") and "broke off after 100 bytes" in err and "nothing was kept" in err
    assert list(tmp_path.iterdir()) == [cutting_server]
