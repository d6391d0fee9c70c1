"""Team quotas and job priorities: each limit refuses a new job through the page and the API with its status
(429 running/queued, 409 GPU-hours/storage) and a message naming the limit and the use; uploads past the storage
quota are refused with nothing stored; a job's priority is kept from the form and the API and orders the queue
position; the heartbeat books worker seconds × GPUs to the job and its team's month; the team page shows the use."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone as tz

import pytest
from django.core.files.storage import default_storage
from django.urls import reverse

from jobs_helpers import completion_rows, make_job, stored_dataset, tiny_entry
from test_api_schema import api, assert_matches_schema  # noqa: F401  (fixture)
from test_jobs_pages import form_data
from webapp.datasets.models import Dataset
from webapp.jobs import queue
from webapp.jobs.models import Job
from webapp.teams.models import MonthlyUsage, Team
from webapp.teams.usage import month_gpu_seconds, month_of


def limit(team, **quotas) -> Team:
    Team.objects.filter(pk=team.pk).update(**quotas)
    team.refresh_from_db()
    return team


def at_each_limit(team, model, dataset, which: str) -> tuple[int, str]:
    """Put `team` at its `which` limit; the status the refusal must have and words its message must hold."""
    if which == "running_jobs":
        limit(team, max_running_jobs=2)
        for _ in range(2):
            make_job(team, model, dataset, state="running")
        return 429, "has 2 running jobs, its limit of 2 concurrent running jobs"
    if which == "queued_jobs":
        limit(team, max_queued_jobs=1)
        make_job(team, model, dataset, state="queued")
        return 429, "has 1 queued job, its limit of 1 queued job"
    if which == "gpu_hours":
        limit(team, gpu_hours_per_month=2)
        MonthlyUsage.objects.create(team=team, month=month_of(), gpu_seconds=2.5 * 3600)
        return 409, "has used 2.50 of its 2 GPU-hours"
    limit(team, max_storage_bytes=dataset.size_bytes)  # exactly full
    return 409, f"({dataset.size_bytes} bytes) of its storage quota"


LIMITS = ["running_jobs", "queued_jobs", "gpu_hours", "storage"]


@pytest.mark.parametrize("which", LIMITS)
def test_a_team_at_a_limit_is_refused_a_job_through_the_api_with_the_limit_and_its_use(api, which, llama_live):
    team = Team.objects.get(name="Team A")
    dataset = stored_dataset(team, completion_rows(), task="causal-lm")
    status, words = at_each_limit(team, llama_live, dataset, which)
    before = Job.objects.count()
    refused = api("POST", "/api/jobs", json_body={"base_model": llama_live.pk, "dataset": dataset.pk, "name": "x",
                                                  "training": {"max_steps": 2, "max_length": 64}})
    assert refused.status_code == status, refused.content
    assert_matches_schema(refused, "/api/jobs", "post")
    error = refused.json()["error"]
    assert error["code"] == "quota_exceeded" and error["limit"] == which
    assert words in error["message"] and error["message"].startswith("The team Team A ")
    assert Job.objects.count() == before


@pytest.fixture
def llama_live(tiny_dirs, transactional_db):
    return tiny_entry("llama", tiny_dirs / "llama")


def waiting_dataset(team):
    """A dataset still validating: jobs on it wait (and count as queued) without reaching the broker, so the
    session's worker, if an earlier test started it, cannot run them and free their place meanwhile."""
    return stored_dataset(team, completion_rows(), task="causal-lm", status="validating")


def test_a_job_passes_under_the_limit_and_the_next_one_is_refused(api, llama_live):
    team = limit(Team.objects.get(name="Team A"), max_queued_jobs=1)
    dataset = waiting_dataset(team)
    body = {"base_model": llama_live.pk, "dataset": dataset.pk, "name": "first", "priority": "high",
            "training": {"max_steps": 2, "max_length": 64}}
    first = api("POST", "/api/jobs", json_body=body)
    assert first.status_code == 201, first.content
    assert Job.objects.get(pk=first.json()["id"]).priority == "high"
    detail = api("GET", f"/api/jobs/{first.json()['id']}")
    assert_matches_schema(detail, "/api/jobs/{job_id}")
    assert detail.json()["priority"] == "high" and detail.json()["status"] == "validating"
    second = api("POST", "/api/jobs", json_body={**body, "name": "second"})
    assert second.status_code == 429 and second.json()["error"]["limit"] == "queued_jobs"
    cancelled = api("POST", f"/api/jobs/{first.json()['id']}/cancel")
    assert cancelled.status_code == 200
    assert api("POST", "/api/jobs", json_body={**body, "name": "third"}).status_code == 201


def test_two_submits_at_once_cannot_both_take_the_last_place(api, llama_live):
    team = limit(Team.objects.get(name="Team A"), max_queued_jobs=1)
    dataset = waiting_dataset(team)
    body = {"base_model": llama_live.pk, "dataset": dataset.pk, "name": "racer",
            "training": {"max_steps": 2, "max_length": 64}}
    start = threading.Barrier(2)

    def submit(_):
        start.wait()
        return api("POST", "/api/jobs", json_body=body).status_code

    with ThreadPoolExecutor(2) as pool:
        statuses = sorted(pool.map(submit, range(2)))
    assert statuses == [201, 429]
    assert Job.objects.filter(team=team).count() == 1


def test_an_unknown_priority_is_a_400_naming_the_field(api, llama_live):
    dataset = stored_dataset(Team.objects.get(name="Team A"), completion_rows(), task="causal-lm")
    refused = api("POST", "/api/jobs", json_body={"base_model": llama_live.pk, "dataset": dataset.pk, "name": "x",
                                                  "priority": "urgent"})
    assert refused.status_code == 400 and refused.json()["error"]["field"] == "priority"


def test_an_upload_past_the_storage_quota_is_refused_by_the_api_and_nothing_is_stored(api, tmp_path):
    team = Team.objects.get(name="Team A")
    first = stored_dataset(team, completion_rows(), task="causal-lm")
    limit(team, max_storage_bytes=first.size_bytes + 100)
    big = tmp_path / "rows.jsonl"
    big.write_text("".join('{"prompt": "p", "completion": "c"}\n' for _ in range(10)))  # 350 bytes > 100 left
    stored_before = sorted(default_storage.listdir("datasets")[1])
    refused = api("POST", "/api/datasets", files={"file": big})
    assert refused.status_code == 409, refused.content
    assert_matches_schema(refused, "/api/datasets", "post")
    error = refused.json()["error"]
    assert error["limit"] == "storage" and "this upload is 350 bytes" in error["message"]
    assert sorted(default_storage.listdir("datasets")[1]) == stored_before
    assert list(Dataset.objects.filter(team=team)) == [first]
    limit(team, max_storage_bytes=first.size_bytes + 350)  # exactly enough
    assert api("POST", "/api/datasets", files={"file": big}).status_code == 201


def test_an_admin_sets_a_teams_quotas_on_its_admin_page(admin_client, make_member):
    make_member("alice", "Team A")
    team = Team.objects.get(name="Team A")
    page = admin_client.get(reverse("admin:teams_team_change", args=[team.pk])).content.decode()
    assert "Quotas (empty: no limit)" in page and 'name="gpu_hours_per_month"' in page
    membership = team.memberships.get()
    saved = admin_client.post(reverse("admin:teams_team_change", args=[team.pk]), {
        "name": team.name, "slug": team.slug, "max_running_jobs": "2", "max_queued_jobs": "",
        "gpu_hours_per_month": "7.5", "max_storage_bytes": "1000000000",
        "memberships-TOTAL_FORMS": "1", "memberships-INITIAL_FORMS": "1", "memberships-MIN_NUM_FORMS": "0",
        "memberships-MAX_NUM_FORMS": "1000", "memberships-0-id": membership.pk, "memberships-0-team": team.pk,
        "memberships-0-user": membership.user_id, "memberships-0-role": "member"})
    assert saved.status_code == 302, saved.content.decode()[:2000]
    team.refresh_from_db()
    assert (team.max_running_jobs, team.max_queued_jobs, team.gpu_hours_per_month, team.max_storage_bytes) == (
        2, None, 7.5, 1_000_000_000)


# --- the pages -----------------------------------------------------------------------------------------------

@pytest.fixture
def team(member_client):
    return member_client.user.teams.get()


def test_the_job_form_refuses_a_team_at_its_gpu_hours_with_the_reason_and_keeps_the_form(member_client, team, llama):
    dataset = stored_dataset(team, completion_rows(), task="causal-lm")
    limit(team, gpu_hours_per_month=1)
    MonthlyUsage.objects.create(team=team, month=month_of(), gpu_seconds=3600)
    response = member_client.post(reverse("jobs:create"), form_data(llama, dataset, name="kept name"))
    assert response.status_code == 409
    page = response.content.decode()
    assert "has used 1.00 of its 1 GPU-hours" in page and 'value="kept name"' in page
    assert not Job.objects.exists()


def test_the_job_form_refuses_a_team_at_its_running_limit_with_429(member_client, team, llama):
    dataset = stored_dataset(team, completion_rows(), task="causal-lm")
    limit(team, max_running_jobs=1)
    make_job(team, llama, dataset, state="running")
    response = member_client.post(reverse("jobs:create"), form_data(llama, dataset))
    assert response.status_code == 429
    assert "has 1 running job, its limit of 1 concurrent running job" in response.content.decode()
    assert Job.objects.count() == 1


def test_the_job_form_stores_the_priority(member_client, team, llama, monkeypatch):
    monkeypatch.setattr("webapp.jobs.queue.send", lambda job_id, task_id=None: None)
    dataset = stored_dataset(team, completion_rows(), task="causal-lm")
    assert 'name="priority"' in member_client.get(reverse("jobs:create")).content.decode()
    response = member_client.post(reverse("jobs:create"), form_data(llama, dataset, priority="low"))
    assert response.status_code == 302
    assert Job.objects.get().priority == "low"


def test_the_upload_page_refuses_a_file_past_the_storage_quota_with_the_reason(member_client, team, tmp_path):
    limit(team, max_storage_bytes=10)
    upload = tmp_path / "rows.jsonl"
    upload.write_text('{"prompt": "p", "completion": "c"}\n')
    with upload.open("rb") as handle:
        response = member_client.post(reverse("datasets:upload"), {"file": handle, "name": "over"})
    assert response.status_code == 409
    assert ("uses 0 bytes (0 bytes) of its storage quota of 10 bytes (10 bytes) and this upload is 35 bytes"
            in response.content.decode())
    assert not Dataset.objects.filter(team=team).exists()


def test_the_queue_position_counts_higher_priorities_first_then_first_come(team, llama):
    dataset = stored_dataset(team, completion_rows(), task="causal-lm")
    at = [datetime(2026, 1, 1, 0, 0, s, tzinfo=tz.utc) for s in range(5)]
    jobs = {}
    for name, level, when in [("low-first", "low", at[0]), ("normal-1", "normal", at[1]),
                              ("high-late", "high", at[4]), ("normal-2", "normal", at[2]), ("high-early", "high", at[3])]:
        jobs[name] = make_job(team, llama, dataset, name=name, priority=level)
        Job.objects.filter(pk=jobs[name].pk).update(queued_at=when)  # record_creation stamped the creation time
        jobs[name].refresh_from_db()
    positions = {name: queue.queue_position(job) for name, job in jobs.items()}
    assert positions == {"high-early": 1, "high-late": 2, "normal-1": 3, "normal-2": 4, "low-first": 5}
    other_class = make_job(team, llama, dataset, name="elsewhere", priority="low", worker_class="gpu-x")
    assert queue.queue_position(other_class) == 1


# --- accounting ----------------------------------------------------------------------------------------------

def test_the_heartbeat_books_worker_seconds_times_gpus_to_the_job_and_the_teams_month(transactional_db, tiny_dirs):
    from workers.progress import Heartbeat
    from webapp.jobs import live

    team = Team.objects.create(name="Counters", slug="counters")
    model = tiny_entry("llama", tiny_dirs / "llama")
    job = make_job(team, model, stored_dataset(team, completion_rows(), task="causal-lm"), state="running",
                   gpus=2)
    live.client().set(live.key(job.pk, "lease"), "token")
    heartbeat = Heartbeat(job, "token", interval_s=0.1)
    after_start = time.monotonic()
    heartbeat.start()
    while Job.objects.get(pk=job.pk).gpu_seconds == 0:  # at least one beat booked
        time.sleep(0.05)
    before_stop = time.monotonic()
    heartbeat.stop()
    after_stop = time.monotonic()
    booked = Job.objects.get(pk=job.pk).gpu_seconds
    # Everything from the thread's creation to its last booking, × 2 GPUs: between these two independent spans.
    assert 2 * (before_stop - after_start) <= booked <= 2 * (after_stop - after_start) + 0.5
    assert month_gpu_seconds(team) == pytest.approx(booked)
    live.client().delete(live.key(job.pk, "lease"))


def test_the_team_page_shows_the_months_use_against_the_quotas(member_client, team, llama):
    limit(team, gpu_hours_per_month=10, max_running_jobs=3)
    MonthlyUsage.objects.create(team=team, month=month_of(), gpu_seconds=1.5 * 3600)
    MonthlyUsage.objects.create(team=team, month=datetime(2020, 1, 1).date(), gpu_seconds=99 * 3600)  # not this month
    make_job(team, llama, stored_dataset(team, completion_rows(), task="causal-lm"), state="running")
    page = member_client.get(reverse("team_detail", args=[team.pk])).content.decode()
    assert "<td>Running jobs</td><td data-used>1</td><td data-limit>3</td>" in page
    assert "<td>GPU-hours this month</td><td data-used>1.5</td><td data-limit>10.0</td>" in page
    assert "<td>Queued jobs</td><td data-used>0</td><td data-limit>no limit</td>" in page
