"""No N+1 queries: the job list, a job's page and GET /api/jobs issue as many SQL queries for 50 jobs as for 5
(benchmarks/web_load.py measures the same at 1,000 jobs)."""
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from jobs_helpers import classification_rows, completion_rows, make_job, stored_dataset, tiny_entry
from webapp.accounts.tokens import issue_token

STATES = ("queued", "running", "succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    return tmp_path_factory.mktemp("query-count-models")


@pytest.fixture
def add_jobs(team_a, tiny_dirs):
    """add_jobs(n): n more jobs of the team in every state, on two base models (a causal LM, a classifier) and
    their own datasets, two in three with an evaluation set, so each related row a page shows differs from job
    to job."""
    kinds = [(tiny_entry("llama", tiny_dirs / "llama"), completion_rows(4), "causal-lm"),
             (tiny_entry("bert", tiny_dirs / "bert"), classification_rows(6), "classification")]
    made = []

    def add(count: int):
        for _ in range(count):
            i = len(made)
            model, rows, task = kinds[i % 2]
            dataset = stored_dataset(team_a, rows, task=task, name=f"data {i}")
            eval_dataset = stored_dataset(team_a, rows, task=task, name=f"eval {i}") if i % 3 else None
            state = STATES[i % len(STATES)]
            now = timezone.now()
            made.append(make_job(team_a, model, dataset, state=state, name=f"job {i}", eval_dataset=eval_dataset,
                                 started_at=None if state == "queued" else now, heartbeat_at=now,
                                 finished_at=now if state in ("succeeded", "failed", "cancelled") else None,
                                 worker_name="" if state == "queued" else f"train@host{i}",
                                 progress={"step": 3, "total_steps": 10},
                                 settings={"lora": {"rank": 4, "targets": "attention"}, "batch_size": 4}))
        return made

    return add


def queries(client, url: str, **headers) -> int:
    client.get(url, **headers)  # once first: per-session and per-token bookkeeping writes happen on first use
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url, **headers)
    assert response.status_code == 200, (url, response.content[:300])
    return len(captured)


def test_the_job_list_issues_as_many_queries_for_fifty_jobs_as_for_five(member_client, add_jobs):
    add_jobs(5)
    few = queries(member_client, reverse("jobs:list"))
    jobs = add_jobs(45)
    many = queries(member_client, reverse("jobs:list"))
    page = member_client.get(reverse("jobs:list")).content.decode()
    assert all(job.name in page and job.dataset.name in page for job in jobs)  # every row shown, not cut short
    assert many == few


def test_a_job_page_issues_as_many_queries_with_fifty_jobs_in_the_team_as_with_five(member_client, add_jobs):
    for state in ("queued", "succeeded"):
        job = next(j for j in add_jobs(5) if j.state == state)
        few = queries(member_client, reverse("jobs:detail", args=[job.pk]))
        add_jobs(45)
        many = queries(member_client, reverse("jobs:detail", args=[job.pk]))
        assert many == few, state


def test_the_api_job_list_issues_as_many_queries_for_fifty_jobs_as_for_five(member_client, team_a, add_jobs):
    _, secret = issue_token(member_client.user, team_a, "query counts")
    auth = {"HTTP_AUTHORIZATION": f"Bearer {secret}"}
    add_jobs(5)
    few = queries(member_client, "/api/jobs?limit=50", **auth)
    jobs = add_jobs(45)
    many = queries(member_client, "/api/jobs?limit=50", **auth)
    listed = member_client.get("/api/jobs?limit=50", **auth).json()
    assert sorted(item["id"] for item in listed["items"]) == sorted(job.pk for job in jobs)
    assert many == few
