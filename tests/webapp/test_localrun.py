"""The one-command local start: Redis fallback to the bundled binary, signing in with the printed demo credentials,
and a clean stop of everything started."""
import http.cookiejar
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from webapp import localrun

ROOT = Path(__file__).resolve().parents[2]


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def sign_in(base_url: str, username: str, password: str) -> tuple[int, str, str]:
    """Sign in through the login form as a browser would (cookies, CSRF token); -> (status, final URL, page)."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    with opener.open(f"{base_url}login/") as login_page:
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page.read().decode())[1]
    form = urllib.parse.urlencode({"csrfmiddlewaretoken": token, "username": username, "password": password})
    with opener.open(f"{base_url}login/", data=form.encode()) as page:
        return page.status, page.url, page.read().decode()


def test_bundled_redis_starts_when_none_answers_and_stops_cleanly(tmp_path):
    url = f"redis://127.0.0.1:{localrun.free_loopback_port()}/0"
    assert not localrun.redis_answers(url)
    process = localrun.start_bundled_redis(url, tmp_path)
    try:
        assert localrun.redis_answers(url)
    finally:
        localrun.stop_processes([process], grace_s=5)
    assert process.poll() is not None
    assert not localrun.redis_answers(url)


def test_a_remote_redis_that_does_not_answer_is_a_clear_error(tmp_path):
    with pytest.raises(localrun.LaunchError, match="not on this machine"):
        localrun.start_bundled_redis("redis://redis.internal:6379/0", tmp_path)


def test_no_bundled_binary_gives_an_install_hint(tmp_path, monkeypatch):
    monkeypatch.setattr(localrun, "bundled_redis_binary", lambda: None)
    with pytest.raises(localrun.LaunchError, match="apt-get install redis-server"):
        localrun.start_bundled_redis(f"redis://127.0.0.1:{localrun.free_loopback_port()}/0", tmp_path)


@pytest.mark.slow
def test_run_command_serves_the_app_signs_in_the_demo_user_and_ctrl_c_stops_everything(tmp_path):
    web_port, redis_port = localrun.free_loopback_port(), localrun.free_loopback_port()
    env = dict(os.environ, VAR_DIR=str(tmp_path), PORT=str(web_port), REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
               DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3", WORKER_CONCURRENCY="1", WEB_CONCURRENCY="1")
    process = subprocess.Popen([sys.executable, "-m", "webapp.localrun"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if "Loraworks is running at" in line or not line:
                break
        output = "".join(lines)
        assert "Loraworks is running at" in output, output
        assert "starting the bundled redis-server" in output
        username, password = re.search(r"Demo sign-in: user (\S+) / password (\S+)", output).groups()
        status, url, page = sign_in(f"http://127.0.0.1:{web_port}/", username, password)
        assert (status, url) == (200, f"http://127.0.0.1:{web_port}/"), page
        assert '<nav class="nav">' in page and ">Datasets</a>" in page and ">Jobs</a>" in page
        assert "<h1>Demo team</h1>" in page and f"<summary>{username}</summary>" in page
        assert port_open(redis_port)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    assert process.returncode == 0
    assert not port_open(web_port) and not port_open(redis_port)
    leftover = subprocess.run(["pgrep", "-f", f"127.0.0.1:{web_port}|--port {redis_port}"], capture_output=True)
    assert leftover.stdout == b"", "a process started by the run command is still alive"
