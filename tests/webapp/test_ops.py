"""The operations page (staff only: workers with their queues and running job, queue lengths, database, Redis,
storage) and the web process's /healthz, against a real worker, the test database and Redis."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
# Django's test client in a process with production settings (no test-environment hosts added): name -> the answer
# to GET path with that Host header, as [status, Content-Type, Location, body].
PRODUCTION_PROBE = """
import json, sys, django
django.setup()
from django.test import Client
answers = {}
for name, path, host in json.loads(sys.argv[1]):
    response = Client().get(path, HTTP_HOST=host)
    answers[name] = [response.status_code, response.get("Content-Type"), response.get("Location"),
                     response.content.decode()]
print(json.dumps(answers))
"""


def compose_web_health_url() -> str:
    test = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["web"]["healthcheck"]["test"]
    return re.search(r"urlopen\('([^']+)'\)", " ".join(test))[1]


def production_answers(tmp_path, settings, requests: list[tuple[str, str, str]]) -> dict:
    env = dict(os.environ, PRODUCTION="1", SECRET_KEY="k" * 50, ALLOWED_HOSTS="example.com",
               DJANGO_SETTINGS_MODULE="webapp.settings", VAR_DIR=str(tmp_path), REDIS_URL=settings.REDIS_URL,
               DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3")
    probe = subprocess.run([sys.executable, "-c", PRODUCTION_PROBE, json.dumps(requests)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    return json.loads(probe.stdout.splitlines()[-1])


def test_in_production_healthz_answers_the_compose_probe_by_address_while_other_pages_keep_host_checks_and_https(
        tmp_path, settings):
    probe_url = urlsplit(compose_web_health_url())
    assert (probe_url.scheme, probe_url.hostname) == ("http", "127.0.0.1")
    answers = production_answers(tmp_path, settings, [
        ("probe", probe_url.path, probe_url.netloc), ("probe_named_host", probe_url.path, "example.com"),
        ("page_by_address", "/login/", probe_url.netloc), ("page_named_host", "/login/", "example.com")])
    status, content_type, _, body = answers["probe"]
    assert (status, content_type) == (200, "application/json")
    assert json.loads(body) == {"status": "ok", "database": True, "redis": True}
    assert answers["probe_named_host"][0] == 200
    assert answers["page_by_address"][0] == 400  # 127.0.0.1 is not in ALLOWED_HOSTS
    assert answers["page_named_host"][:3:2] == [301, "https://example.com/login/"]


def test_in_production_healthz_answers_503_by_address_when_redis_is_unreachable(tmp_path, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/15"
    status, content_type, _, body = production_answers(tmp_path, settings, [("probe", "/healthz", "127.0.0.1:8000")])[
        "probe"]
    assert (status, content_type) == (503, "application/json")
    assert json.loads(body) == {"status": "unavailable", "database": True, "redis": False}


def test_the_empty_worker_list_points_to_a_readme_section_that_exists():
    template = (ROOT / "templates" / "ops" / "status.html").read_text()
    heading = re.search(r"README's “([^”]+)”", template)[1]
    assert f"\n## {heading}\n" in (ROOT / "README.md").read_text()


@pytest.mark.django_db
def test_healthz_answers_200_when_the_database_and_redis_answer(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": True, "redis": True}


@pytest.mark.django_db
def test_healthz_answers_503_naming_redis_when_it_is_unreachable(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/15"
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": True, "redis": False}


@pytest.mark.django_db
def test_an_anonymous_visitor_is_sent_to_sign_in(client):
    anonymous = client.get("/ops/")
    assert anonymous.status_code == 302 and anonymous.url.startswith("/login/")


@pytest.mark.django_db
def test_a_member_who_is_not_staff_is_refused(member_client):
    assert member_client.get("/ops/").status_code == 403


@pytest.mark.django_db(transaction=True)
def test_staff_see_live_workers_with_their_queues_and_reachable_services(celery_worker, member_client):
    member_client.user.is_staff = True
    member_client.user.save()
    page = member_client.get("/ops/")
    assert page.status_code == 200
    html = page.content.decode()
    assert celery_worker.name in html
    row = html[html.index(celery_worker.name):]
    assert "default, infer, train" in row[:400]
    assert html.count("reachable</span>") == 3 and "unreachable" not in html
    assert "free</p>" in html  # local storage shows its free space
    queues = html[html.index('class="table queues"'):html.index("</table>")]
    assert all(name in queues for name in ("default", "train", "infer")) and "no worker" not in queues
