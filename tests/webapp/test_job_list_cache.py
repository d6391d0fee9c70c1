"""The job list's rows come from the fragment cache (webapp.fragments, in the test Redis) only while nothing they
show has changed: every change, however it is written, is on the next load; one team never gets another team's
rows; and without Redis the list still renders."""
import redis
import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from jobs_helpers import make_job
from webapp.catalog.models import BaseModel
from webapp.datasets.models import Dataset
from webapp.jobs import states
from webapp.jobs.models import Job


@pytest.fixture
def job(team_a):
    model = BaseModel.objects.create(name="cache model", source="demo/cache", status="ready")
    dataset = Dataset.objects.create(team=team_a, name="cache data", file="datasets/cache.jsonl", status="ready",
                                     task="causal-lm", format="prompt_completion")
    return make_job(team_a, model, dataset, name="cache job", progress={"step": 3, "total_steps": 10})


def cached_rows(team) -> list[bytes]:
    """The job list fragments cached for `team` (their keys end in a digest of what they show)."""
    store = redis.Redis.from_url(settings.REDIS_URL)
    return list(store.scan_iter(match=f"*fragment:jobs/_row.html:{team.pk}:*"))


def listing(client) -> str:
    response = client.get(reverse("jobs:list"))
    assert response.status_code == 200
    return response.content.decode()


def test_every_change_to_what_a_row_shows_is_on_the_next_load(member_client, job):
    assert "cache job" in listing(member_client) and "3/10" in listing(member_client)
    changes = [  # each written the way the app writes it: queryset updates (the worker's way), a move, renames
        (lambda: Job.objects.filter(pk=job.pk).update(name="renamed job"), "renamed job"),
        (lambda: Job.objects.filter(pk=job.pk).update(progress={"step": 7, "total_steps": 10}), "7/10"),
        (lambda: states.move(job, states.RUNNING, worker_name="train@box1"), "train@box1"),
        (lambda: Job.objects.filter(pk=job.pk).update(progress={"step": 8, "total_steps": 10, "loss": 1.5}),
         'style="width: 80.0%"'),
        (lambda: BaseModel.objects.filter(pk=job.base_model_id).update(name="renamed model"), "renamed model"),
        (lambda: Dataset.objects.filter(pk=job.dataset_id).update(name="renamed data"), "renamed data"),
        (lambda: states.move(job, states.SUCCEEDED), 'style="width: 100.0%"'),  # a succeeded job is full
    ]
    for change, shown in changes:
        assert shown not in listing(member_client)
        change()
        assert shown in listing(member_client), shown
    assert len(cached_rows(job.team)) >= len(changes)  # each version was cached, under its own key
    Job.objects.filter(pk=job.pk).delete()
    assert "renamed job" not in listing(member_client) and "No jobs yet" in listing(member_client)


def test_rows_come_from_the_cache_for_their_own_team_only(member_client, job, team_b):
    store = redis.Redis.from_url(settings.REDIS_URL)
    listing(member_client)
    [key] = [key for key in cached_rows(job.team) if store.get(key) and b"cache job" in store.get(key)]
    store.set(key, '"<tr><td>served from the cache</td></tr>"')  # JSON, as webapp.cache stores it
    try:
        assert "served from the cache" in listing(member_client)  # unchanged rows are not rendered again
        Job.objects.filter(pk=job.pk).update(team=team_b)  # the same row, now another team's
        bob = Client()
        bob.force_login(team_b.members.get())
        page = listing(bob)
        assert "served from the cache" not in page and "cache job" in page
        assert "served from the cache" not in listing(member_client)
    finally:
        store.delete(key)


def test_the_list_renders_its_rows_when_redis_is_unreachable(member_client, job, settings):
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": "redis://127.0.0.1:1/0"}}
    started = timezone.now()
    page = listing(member_client)
    assert "cache job" in page and "3/10" in page
    assert (timezone.now() - started).total_seconds() < 5
