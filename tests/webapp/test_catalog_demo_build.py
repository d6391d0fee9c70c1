"""The demo LM's first build, seen on the Models page: a real worker with an empty model cache builds it and the
page shows how far the build is (a progress bar and "step N of M" that advance) and reloads itself meanwhile."""
import os
import re

import pytest
from django.urls import reverse

from jobs_helpers import wait_for
from webapp.catalog.demo import register_demo_models
from webapp.catalog.inspection import request_inspection
from webapp.catalog.models import BaseModel
from worker_process import WorkerProcess, database_url

pytestmark = pytest.mark.django_db(transaction=True)
BUILDING = re.compile(r'<div class="build-progress" data-step="(\d+)">.*?step (\d+) of (\d+)</div>', re.S)


@pytest.fixture
def building_worker(tmp_path):
    """A worker of its own with an empty model cache; the session's worker (if any) stops taking `default` tasks
    meanwhile, so this one is the worker that builds."""
    from django.conf import settings
    from django.db import connection

    from workers import app

    session_worker = f"test-{os.getpid()}@localhost"
    app.control.cancel_consumer("default", destination=[session_worker], reply=True, timeout=2)
    env = dict(os.environ, DATABASE_URL=database_url(connection.settings_dict), REDIS_URL=settings.REDIS_URL,
               VAR_DIR=str(settings.VAR_DIR), MEDIA_ROOT=str(settings.MEDIA_ROOT), HF_HUB_OFFLINE="1",
               LORAWORKS_MODEL_CACHE=str(tmp_path / "models"))
    worker = WorkerProcess(env, tmp_path / "worker.log", queues="default", concurrency=1,
                           name=f"builder-{os.getpid()}@localhost").start()
    yield worker
    worker.kill()  # the rest of the build is not needed: the benchmark times a whole one
    app.control.add_consumer("default", destination=[session_worker], reply=True, timeout=2)


def test_the_models_page_follows_the_demo_lm_build(member_client, building_worker):
    register_demo_models(BaseModel)
    entry = BaseModel.objects.get(source="demo/tiny-lm")
    request_inspection(entry)

    def building_step():
        page = member_client.get(reverse("models:list")).content.decode()
        found = BUILDING.search(page)
        return found and (page, *map(int, found.groups()))
    page, first, shown, total = wait_for(building_step, 300, what="the build's first progress on the Models page")
    assert first == shown and total == 200 and 0 < first < total
    assert '<meta http-equiv="refresh" content="3">' in page  # it follows the build by itself
    assert re.search(rf'aria-valuenow="{round(100 * first / total)}"', page)
    later = wait_for(lambda: (step := building_step()) and step[1] > first and step, 300,
                     what="the build's progress to advance")
    assert later[1] > first and BaseModel.objects.get(pk=entry.pk).status == "inspecting"
    detail = member_client.get(reverse("models:detail", args=[entry.pk])).content.decode()
    assert re.search(r"The demo LM is being built first: step \d+ of 200\.", detail)
