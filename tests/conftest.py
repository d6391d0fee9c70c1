"""Fixtures shared by every test package: users in teams, a signed-in client, and a real Celery worker process."""
import os
from urllib.parse import urlsplit

import pytest
from worker_process import WorkerProcess, database_url


@pytest.fixture(autouse=True, scope="session")
def fast_password_hashing():
    """Passwords hash at 1,000 PBKDF2 iterations in the test process (see fast_password_hasher)."""
    from django.test.utils import override_settings

    with override_settings(PASSWORD_HASHERS=["fast_password_hasher.FastPBKDF2PasswordHasher"]):
        yield


@pytest.fixture
def make_member(db):
    """make_member("alice", "Team A") -> a user who belongs to that team (created if needed)."""
    from django.contrib.auth import get_user_model

    from webapp.teams.accounts import add_user_to_team

    def make(username: str, team_name: str, role: str = "member", password: str = "pw-for-tests-1"):
        users = get_user_model().objects
        user = users.filter(username=username).first() or users.create_user(username=username, password=password)
        add_user_to_team(username, team_name, role)
        return user

    return make


@pytest.fixture
def member_client(client, make_member):
    """A test client signed in as a member of "Team A"."""
    user = make_member("alice", "Team A")
    client.force_login(user)
    client.user = user
    return client


@pytest.fixture
def team_a(member_client):
    """Team A, whose member `member_client` is signed in."""
    from webapp.teams.models import Team

    return Team.objects.get(name="Team A")


@pytest.fixture
def team_b(make_member):
    """Team B, with its own member bob."""
    from webapp.teams.models import Team

    make_member("bob", "Team B")
    return Team.objects.get(name="Team B")


@pytest.fixture(scope="session")
def llama_run(tmp_path_factory):
    """A finished causal-LM run on a tiny Llama: base folder, adapter and metrics (finished_jobs.build_artifacts)."""
    import finished_jobs

    return finished_jobs.build_artifacts("llama", tmp_path_factory.mktemp("llama-run"))


@pytest.fixture(scope="session")
def merged_llama_run(tmp_path_factory):
    """The same as llama_run, with a merged model too."""
    import finished_jobs

    return finished_jobs.build_artifacts("llama", tmp_path_factory.mktemp("merged-llama-run"), merge=True)


@pytest.fixture(scope="session")
def bert_run(tmp_path_factory):
    """A finished classification run on a tiny BERT."""
    import finished_jobs

    return finished_jobs.build_artifacts("bert", tmp_path_factory.mktemp("bert-run"))


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker, tmp_path_factory):
    """Start one real worker for the session. Tests using it need `transactional_db` (or `live_server`), since the
    worker only sees committed rows. Redis must be a test database: ./test.sh points REDIS_URL at db 15."""
    import redis
    from django.conf import settings
    from django.db import connection

    if urlsplit(settings.REDIS_URL).path in ("", "/", "/0"):
        pytest.fail("integration tests flush their Redis database: run them with ./test.sh (REDIS_URL db 15)")
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    env = dict(os.environ, DATABASE_URL=database_url(connection.settings_dict), REDIS_URL=settings.REDIS_URL,
               VAR_DIR=str(settings.VAR_DIR), MEDIA_ROOT=str(settings.MEDIA_ROOT), HF_HUB_OFFLINE="1")
    worker = WorkerProcess(env, tmp_path_factory.mktemp("celery") / "worker.log").start()
    yield worker
    worker.stop()


@pytest.fixture(scope="session")
def demo_lm_build(tmp_path_factory):
    """The full demo causal LM, built once per session by its command line (`python -m trainer.demo_models`):
    (folder, seconds the build took, CPU seconds it used). The build test checks it; the browser suite trains on
    it."""
    import resource
    import subprocess
    import sys
    import time

    def children_cpu_s() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    folder = tmp_path_factory.mktemp("demo-lm") / "lm"
    started, cpu_before = time.monotonic(), children_cpu_s()
    subprocess.run([sys.executable, "-m", "trainer.demo_models", str(folder)], check=True,
                   env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True)
    return folder, time.monotonic() - started, children_cpu_s() - cpu_before
