"""webapp.gunicorn_conf, which every launcher passes to gunicorn (`./run.sh`, compose, the Dockerfile, the fuzz
script, the load benchmark): a real gunicorn started with it answers, and closes each connection after its response,
so that waiting clients queue in the kernel for whichever worker frees a thread first."""
import http.client
import os
import re
from pathlib import Path

from gunicorn_server import gunicorn_serving
from webapp.localrun import free_loopback_port
from worker_process import database_url

ROOT = Path(__file__).resolve().parents[1]
CONF = "python:webapp.gunicorn_conf"


def test_each_response_closes_its_connection(transactional_db, tmp_path, settings):
    from django.db import connection

    env = dict(os.environ, DATABASE_URL=database_url(connection.settings_dict), REDIS_URL=settings.REDIS_URL,
               VAR_DIR=str(settings.VAR_DIR), MEDIA_ROOT=str(settings.MEDIA_ROOT))
    port = free_loopback_port()
    with gunicorn_serving(env, port, tmp_path / "gunicorn.log", "-c", CONF, "--workers", "2"):
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        client.request("GET", "/healthz")  # HTTP/1.1: the client asks to keep the connection
        response = client.getresponse()
        assert (response.status, response.getheader("Connection")) == (200, "close")
        response.read()
        assert client.sock is None  # http.client saw the server close it
        client.request("GET", "/login/")  # the next request goes on a new connection
        assert client.getresponse().status == 200


def test_every_launcher_runs_gunicorn_with_the_conf():
    launchers = ["webapp/localrun.py", "compose.yaml", "Dockerfile", "scripts/api_fuzz.sh", "benchmarks/web_load.py"]
    for path in launchers:
        text = (ROOT / path).read_text()
        starts = re.findall(r"gunicorn\W+webapp\.wsgi\W+-c\W+python:webapp\.gunicorn_conf", text)
        assert len(starts) == 1, path
