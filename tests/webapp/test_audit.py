"""The audit log: sign-ins and failed ones, API tokens created and revoked, jobs created, cancelled and deleted,
datasets uploaded and deleted and downloads are recorded with who, when, the address and the door (web or api),
in the team they concern; owners read their own team's log on the team page, paged, members and other teams do
not; admins read every row in the admin."""
import io
import zipfile

import pytest
from django.test import Client
from django.urls import reverse

import finished_jobs
from jobs_helpers import completion_rows, make_job, stored_dataset, tiny_entry
from test_api_schema import api  # noqa: F401  (fixture)
from webapp.accounts.models import ApiToken
from webapp.audit.models import AuditEvent
from webapp.datasets.models import Dataset
from webapp.teams.models import Membership, Team
from webapp.teams.views import AUDIT_PER_PAGE


def rows(team=None, **lookup) -> list[tuple]:
    """The audit rows (of `team`), oldest first, without the test client's own sign-ins (force_login)."""
    events = (AuditEvent.objects.filter(**({"team": team} if team is not None else {}), **lookup)
              .exclude(action="sign_in", ip__isnull=True).order_by("pk"))
    return [(e.username, e.action, e.target, e.ip, e.via) for e in events]


def test_sign_ins_and_failed_ones_are_recorded_in_each_team_of_the_user(client, make_member):
    make_member("alice", "Team A", password="correct-horse-9")
    make_member("alice", "Team Z")
    assert client.post(reverse("login"), {"username": "alice", "password": "wrong"}).status_code == 200
    assert client.post(reverse("login"), {"username": "nobody", "password": "x"}).status_code == 200
    assert client.post(reverse("login"), {"username": "alice", "password": "correct-horse-9"}).status_code == 302
    for team in Team.objects.filter(name__in=["Team A", "Team Z"]):
        assert rows(team) == [("alice", "sign_in_failed", "", "127.0.0.1", "web"),
                              ("alice", "sign_in", "", "127.0.0.1", "web")]
    assert rows(team__isnull=True) == [("nobody", "sign_in_failed", "", "127.0.0.1", "web")]


def test_tokens_created_and_revoked_on_the_settings_page_are_recorded(member_client, team_a):
    member_client.post(reverse("accounts:settings"), {"name": "ci", "team": team_a.pk})
    token = ApiToken.objects.get(name="ci")
    member_client.post(reverse("accounts:revoke_token", args=[token.pk]))
    target = f"token ci ({token.prefix}…)"
    assert rows(team_a) == [("alice", "token_created", target, "127.0.0.1", "web"),
                            ("alice", "token_revoked", target, "127.0.0.1", "web")]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    return finished_jobs.build_artifacts("llama", tmp_path_factory.mktemp("audit-run"))


def test_jobs_datasets_and_downloads_through_the_pages_are_recorded(member_client, team_a, finished_run, tmp_path,
                                                                     monkeypatch):
    monkeypatch.setattr("webapp.jobs.queue.send", lambda job_id, task_id=None: None)
    upload = tmp_path / "rows.jsonl"
    upload.write_text("".join('{"prompt": "p", "completion": "c"}\n' for _ in range(4)))
    with upload.open("rb") as handle:
        assert member_client.post(reverse("datasets:upload"), {"file": handle, "name": "mine"}).status_code == 302
    dataset = Dataset.objects.get(name="mine")
    job = finished_jobs.make_job(team_a, finished_run, merged=False)
    assert member_client.get(reverse("results:download", args=[job.pk, "adapter"])).status_code == 200
    assert member_client.get(reverse("results:download", args=[job.pk, "merged"])).status_code == 404  # not recorded
    queued = make_job(team_a, job.base_model, dataset, name="to cancel")
    member_client.post(reverse("jobs:cancel", args=[queued.pk]))
    member_client.post(reverse("jobs:delete", args=[queued.pk]))
    member_client.post(reverse("datasets:delete", args=[dataset.pk]))
    assert rows(team_a) == [
        ("alice", "dataset_uploaded", f"dataset {dataset.pk} “mine”", "127.0.0.1", "web"),
        ("alice", "download", f"adapter of job {job.pk} “{job.name}”", "127.0.0.1", "web"),
        ("alice", "job_cancelled", f"job {queued.pk} “to cancel”", "127.0.0.1", "web"),
        ("alice", "job_deleted", f"job {queued.pk} “to cancel”", "127.0.0.1", "web"),
        ("alice", "dataset_deleted", f"dataset {dataset.pk} “mine”", "127.0.0.1", "web"),
    ]


def test_jobs_and_downloads_through_the_api_are_recorded_as_api(api, finished_run, tmp_path):
    team = Team.objects.get(name="Team A")
    model = tiny_entry("llama", tmp_path / "models")
    # Still validating: the job waits without reaching the broker, so the session's worker (if an earlier test
    # started it) cannot pick it up and make the cancel a request to a running job, which is not deletable yet.
    dataset = stored_dataset(team, completion_rows(), task="causal-lm", status="validating")
    created = api("POST", "/api/jobs", json_body={"base_model": model.pk, "dataset": dataset.pk, "name": "scripted",
                                                  "training": {"max_steps": 2, "max_length": 64}})
    assert created.status_code == 201
    job_id = created.json()["id"]
    assert api("POST", f"/api/jobs/{job_id}/cancel").status_code == 200
    assert api("DELETE", f"/api/jobs/{job_id}").status_code == 204
    finished = finished_jobs.make_job(team, finished_run, merged=False)
    adapter = api("GET", f"/api/jobs/{finished.pk}/adapter")
    assert adapter.status_code == 200 and zipfile.ZipFile(io.BytesIO(adapter.content)).namelist()
    assert rows(team) == [("alice", "job_created", f"job {job_id} “scripted”", "127.0.0.1", "api"),
                          ("alice", "job_cancelled", f"job {job_id} “scripted”", "127.0.0.1", "api"),
                          ("alice", "job_deleted", f"job {job_id} “scripted”", "127.0.0.1", "api"),
                          ("alice", "download", f"adapter of job {finished.pk} “{finished.name}”", "127.0.0.1", "api")]


def test_owners_read_their_teams_log_paged_and_members_and_other_teams_do_not(client, make_member):
    owner = make_member("olga", "Team A", role=Membership.Role.OWNER)
    member = make_member("alice", "Team A")
    make_member("bob", "Team B", role=Membership.Role.OWNER)
    team_a, team_b = Team.objects.get(name="Team A"), Team.objects.get(name="Team B")
    AuditEvent.objects.bulk_create([AuditEvent(team=team_a, username="alice", action="download", target=f"file {i}",
                                               ip="10.0.0.7", via="web") for i in range(AUDIT_PER_PAGE + 3)])
    AuditEvent.objects.create(team=team_b, username="bob", action="download", target="team B secret")
    client.force_login(owner)
    total = AuditEvent.objects.filter(team=team_a).count()  # the downloads and olga's sign-in
    assert total == AUDIT_PER_PAGE + 4
    first = client.get(reverse("team_detail", args=[team_a.pk])).content.decode()
    assert first.count("data-action=") == AUDIT_PER_PAGE
    assert f"Page 1 of 2 · {total} in all" in first and "10.0.0.7" in first
    assert "team B secret" not in first
    second = client.get(reverse("team_detail", args=[team_a.pk]) + "?page=2").content.decode()
    assert second.count("data-action=") == 4 and "file 0<" in second  # the oldest, last
    member_client = Client()
    member_client.force_login(member)
    page = member_client.get(reverse("team_detail", args=[team_a.pk])).content.decode()
    assert 'id="audit-log"' not in page and "10.0.0.7" not in page
    assert client.get(reverse("team_detail", args=[team_b.pk])).status_code == 404


def test_admins_read_every_teams_audit_log_in_the_admin(admin_client, make_member):
    make_member("alice", "Team A")
    AuditEvent.objects.create(team=Team.objects.get(name="Team A"), username="alice", action="sign_in",
                              ip="192.0.2.1", via="web")
    AuditEvent.objects.create(team=None, username="mallory", action="sign_in_failed", ip="192.0.2.9", via="web")
    page = admin_client.get(reverse("admin:audit_auditevent_changelist")).content.decode()
    assert "192.0.2.1" in page and "mallory" in page and "192.0.2.9" in page
    assert admin_client.get(reverse("admin:audit_auditevent_add")).status_code == 403
