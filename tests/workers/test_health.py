"""A real worker process answers the health task through Redis, and the health command by its node name
(`python -m workers.healthcheck NAME`, compose's worker healthcheck), reaching the test database."""
import json
import os
import subprocess
import sys

import pytest

from workers.health_tasks import health

pytestmark = pytest.mark.django_db(transaction=True)


def healthcheck(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workers.healthcheck", *args], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ))


def test_a_real_worker_reaches_the_database_and_redis(celery_worker):
    result = health.apply_async(queue="default").get(timeout=30)
    assert result["database"] is True and result["redis"] is True


def test_a_named_worker_answers_the_health_command_from_its_own_process(celery_worker):
    done = healthcheck(celery_worker.name)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["database"] is True and answer["redis"] is True and answer["worker"]


def test_a_worker_that_does_not_answer_is_unhealthy(celery_worker):
    done = healthcheck("nobody@nowhere", "--timeout", "1")
    assert done.returncode == 1 and "worker nobody@nowhere did not answer within 1 s" in done.stderr
