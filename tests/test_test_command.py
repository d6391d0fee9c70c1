"""The README's test command brings its own Redis: when none answers at the test Redis URL, ./test.sh (through
scripts/redis_for_tests.py) starts the bundled redis-server on a free loopback port and stops it afterwards."""
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from webapp import localrun

ROOT = Path(__file__).resolve().parents[1]
HELPER = ROOT / "scripts" / "redis_for_tests.py"


def closed_port_url(db: int = 15) -> str:
    return f"redis://127.0.0.1:{localrun.free_loopback_port()}/{db}"


def start_helper(url: str, workdir: Path) -> tuple[subprocess.Popen, str]:
    helper = subprocess.Popen([sys.executable, str(HELPER), url, str(workdir)], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return helper, helper.stdout.readline().strip()


def selected_db(url: str) -> int:
    """The database number a connection to `url` is really on, as the server reports it."""
    return int(redis.Redis.from_url(url).client_info()["db"])


def test_the_helper_starts_a_redis_on_another_port_when_none_answers_and_stops_it_when_its_input_closes(tmp_path):
    asked = closed_port_url(db=15)
    helper, url = start_helper(asked, tmp_path)
    try:
        assert url.startswith("redis://127.0.0.1:") and url != asked
        assert localrun.redis_answers(url)
        assert selected_db(url) == 15
    finally:
        helper.stdin.close()
        helper.wait(timeout=15)
    assert helper.returncode == 0
    assert f"No Redis answers at {asked}; the tests use the bundled redis-server at {url}" in helper.stderr.read()
    assert not localrun.redis_answers(url)
    assert (tmp_path / "redis.log").is_file()


def test_the_helper_stops_its_redis_on_sigterm_and_keeps_the_database_number(tmp_path):
    helper, url = start_helper(closed_port_url(db=9), tmp_path)
    try:
        assert selected_db(url) == 9
        helper.send_signal(signal.SIGTERM)
        assert helper.wait(timeout=15) == 0
    finally:
        helper.communicate(timeout=15)  # closes its stdin: it stops its server even if the test failed above
    assert not localrun.redis_answers(url)


def test_the_helper_hands_back_a_redis_that_answers_and_starts_nothing(tmp_path):
    answering = os.environ["REDIS_URL"]  # ./test.sh made sure this one answers
    helper, url = start_helper(answering, tmp_path)
    helper.communicate(timeout=15)
    assert (url, helper.returncode) == (answering, 0)
    assert not (tmp_path / "redis.log").exists()


@pytest.mark.slow
def test_the_test_command_runs_against_a_redis_it_started_and_leaves_none_running(tmp_path):
    env = dict(os.environ, TEST_REDIS_URL=closed_port_url(), VAR_DIR=str(tmp_path),
               DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3")
    # /healthz pings settings.REDIS_URL: it passes only if the tests were pointed at the Redis that was started.
    run = subprocess.run(["./test.sh", "tests/webapp/test_ops.py", "-q", "-p", "no:cacheprovider",
                          "-k", "healthz_answers_200"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout
    started = re.search(r"the tests use the bundled redis-server at (\S+) \(stopped when they end\)", run.stderr)
    assert started, run.stderr
    assert not localrun.redis_answers(started[1])
