"""Who may open what, route by route: every page and API route in the URL resolver is requested as an anonymous
visitor (login redirect, or 401 from the API), as a member of another team (404 for team objects; lists show none
of them) and as a member of the owning team (answered). A route added without a case here fails the first test."""
import json
import sys
from pathlib import Path
from urllib.parse import parse_qsl

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

sys.path.insert(0, str(Path(__file__).resolve().parent))
ROOT = Path(__file__).resolve().parents[2]

from finished_jobs import build_artifacts, make_job  # noqa: E402

pytestmark = pytest.mark.django_db
PUBLIC = {"login", "logout", "api:schema", "api:reference", "api:unknown", "serving:unknown", "ops:healthz"}  # open to all by design
STAFF_ONLY = {"ops:status": "/ops/"}  # operators' pages: checked with the admin below


def route_names(patterns=None, prefix="") -> set[str]:
    names = set()
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(entry, URLResolver):
            if entry.namespace != "admin":  # Django's own admin: staff only, checked separately below
                names |= route_names(entry.url_patterns, f"{prefix}{entry.namespace}:" if entry.namespace else prefix)
        elif isinstance(entry, URLPattern) and entry.name:
            names.add(prefix + entry.name)
    return names


# route name -> (method, path from the fixture's objects, whether it is one team object, the member's status).
# POSTs that change things act on objects made for them and run after the other-team attempt; a POST's query string
# is sent as its form body.
PAGES = {
    "dashboard": ("GET", lambda o: "/", False, 200),
    "switch_team": ("POST", lambda o: f"/teams/switch/?team={o.team.pk}", True, 302),
    "team_detail": ("GET", lambda o: f"/teams/{o.team.pk}/", True, 200),
    "models:list": ("GET", lambda o: "/models/", False, 200),
    "models:detail": ("GET", lambda o: f"/models/{o.job.base_model.pk}/", False, 200),  # global catalog
    "datasets:list": ("GET", lambda o: "/datasets/", False, 200),
    "datasets:upload": ("GET", lambda o: "/datasets/upload/", False, 200),
    "datasets:use_sample": ("POST", lambda o: "/datasets/samples/nonexistent/", False, 302),
    "datasets:detail": ("GET", lambda o: f"/datasets/{o.dataset.pk}/", True, 200),
    "datasets:status": ("GET", lambda o: f"/datasets/{o.dataset.pk}/status/", True, 200),
    "datasets:analyse": ("POST", lambda o: f"/datasets/{o.dataset.pk}/analysis/", True, 302),
    "datasets:column_mapping": ("POST", lambda o: f"/datasets/{o.dataset.pk}/columns/", True, 302),
    "datasets:confirm_rows": ("POST", lambda o: f"/datasets/{o.dataset.pk}/confirm-rows/", True, 302),
    "datasets:delete": ("POST", lambda o: f"/datasets/{o.spare_dataset.pk}/delete/", True, 302),
    "jobs:list": ("GET", lambda o: "/jobs/", False, 200),
    "jobs:create": ("GET", lambda o: "/jobs/new/", False, 200),
    # Without rank, batch size and max length: the estimate's own 400 naming them (the catalog is global).
    "jobs:estimate": ("GET", lambda o: f"/jobs/estimate/?base_model={o.job.base_model.pk}", False, 400),
    "jobs:advice": ("GET", lambda o: f"/jobs/advice/?base_model={o.job.base_model.pk}&dataset={o.dataset.pk}", True,
                    200),
    "jobs:detail": ("GET", lambda o: f"/jobs/{o.job.pk}/", True, 200),
    "jobs:cancel": ("POST", lambda o: f"/jobs/{o.job.pk}/cancel/", True, 302),
    "jobs:delete": ("POST", lambda o: f"/jobs/{o.spare_job.pk}/delete/", True, 302),
    "jobs:progress": ("GET", lambda o: f"/jobs/{o.job.pk}/progress/", True, 200),
    "jobs:events": ("GET", lambda o: f"/jobs/{o.job.pk}/events/", True, 200),
    "results:job": ("GET", lambda o: f"/jobs/{o.job.pk}/results/", True, 200),
    "results:compare": ("GET", lambda o: f"/jobs/compare/?job={o.job.pk}", False, 200),
    "results:download": ("GET", lambda o: f"/jobs/{o.job.pk}/download/adapter/", True, 200),
    "results:playground": ("GET", lambda o: "/playground/", False, 200),
    # No prompt: the owner gets the prompt's field error, another team's member also one saying the job is not theirs.
    "results:playground_run": ("POST", lambda o: f"/playground/run/?job={o.job.pk}", False, 400),
    "results:playground_stream": ("GET", lambda o: f"/playground/stream/{o.request_id}/", True, 200),
    "accounts:settings": ("GET", lambda o: "/account/settings/", False, 200),
    "accounts:revoke_token": ("POST", lambda o: f"/account/tokens/{o.spare_token.pk}/revoke/", True, 302),
}
# route name -> (method, path, whether it is one team object, the owner's status). This job is finished and did not
# merge: cancelling it is a 409, its merged model a 404 saying so; an empty playground body is a 400.
API = {
    "api:me": ("GET", lambda o: "/api/me", False, 200),
    "api:models": ("GET", lambda o: "/api/models", False, 200),
    "api:model": ("GET", lambda o: f"/api/models/{o.job.base_model.pk}", False, 200),
    "api:datasets": ("GET", lambda o: "/api/datasets", False, 200),
    "api:dataset": ("GET", lambda o: f"/api/datasets/{o.dataset.pk}", True, 200),
    # The job's dataset was never validated here: confirming its good rows is the owner's 409.
    "api:dataset_confirm_rows": ("POST", lambda o: f"/api/datasets/{o.dataset.pk}/confirm-rows", True, 409),
    "api:jobs": ("GET", lambda o: "/api/jobs", False, 200),
    "api:job": ("GET", lambda o: f"/api/jobs/{o.job.pk}", True, 200),
    "api:job_events": ("GET", lambda o: f"/api/jobs/{o.job.pk}/events", True, 200),
    "api:job_cancel": ("POST", lambda o: f"/api/jobs/{o.job.pk}/cancel", True, 409),
    "api:job_adapter": ("GET", lambda o: f"/api/jobs/{o.job.pk}/adapter", True, 200),
    "api:job_merged": ("GET", lambda o: f"/api/jobs/{o.job.pk}/merged", True, 404),
    "api:job_metrics": ("GET", lambda o: f"/api/jobs/{o.job.pk}/metrics", True, 200),
    "api:job_playground": ("POST", lambda o: f"/api/jobs/{o.job.pk}/playground", True, 400),
    "serving:models": ("GET", lambda o: "/v1/models", False, 200),
    # The model is checked before the other parameters: max_tokens=0 is the owner's 400, another team's 404.
    "serving:chat_completions": ("POST", lambda o: f"/v1/chat/completions?model=job-{o.lm_job.pk}&max_tokens=0",
                                 True, 400),
    "serving:completions": ("POST", lambda o: f"/v1/completions?model=job-{o.lm_job.pk}&max_tokens=0", True, 400),
}


class Objects:
    """Team A's things: a finished job with its artifacts, its dataset, a spare dataset and token to delete."""

    def __init__(self, tmp_path, make_member):
        from webapp.accounts.tokens import issue_token
        from webapp.datasets.models import Dataset
        from webapp.jobs.models import Job
        from webapp.results import playground
        from webapp.teams.models import Team

        self.alice, self.bob = make_member("alice", "Team A"), make_member("bob", "Team B")
        self.team = Team.objects.get(name="Team A")
        self.job = make_job(self.team, build_artifacts("bert", tmp_path), merged=False)
        self.lm_job = make_job(self.team, build_artifacts("llama", tmp_path / "lm"), name="served")
        self.dataset = self.job.dataset
        self.spare_job = Job.objects.create(team=self.team, name="spare job", base_model=self.job.base_model,
                                            dataset=self.dataset, task=self.job.task, state="succeeded")
        self.spare_dataset = Dataset.objects.create(team=self.team, name="spare", original_filename="s.jsonl",
                                                    file="datasets/none.jsonl", status="ready")
        self.token, self.secret = issue_token(self.alice, self.team, "matrix")
        self.spare_token, _ = issue_token(self.alice, self.team, "to revoke")
        self.other_token, self.other_secret = issue_token(self.bob, Team.objects.get(name="Team B"), "other")
        self.request_id = "matrix-request"
        playground.redis_client().set(playground.owner_key(self.request_id), self.team.pk, ex=60)


@pytest.fixture
def objects(tmp_path, make_member):
    return Objects(tmp_path, make_member)


def call(client, method, path, **headers):
    if method == "POST":
        path, _, form = path.partition("?")
        headers["content_type"] = "application/x-www-form-urlencoded"
        if path.startswith("/v1/"):  # OpenAI's routes read JSON bodies
            form, headers["content_type"] = json.dumps(dict(parse_qsl(form))), "application/json"
        response = client.generic(method, path, form, **headers)
    else:
        response = client.generic(method, path, **headers)
    # An event stream's body is never read: its status is what matters here. (Closing it would send
    # request_finished, which closes the test's database connection.)
    return response


def test_every_route_has_a_case():
    assert route_names() - PUBLIC - set(STAFF_ONLY) == set(PAGES) | set(API)


def test_anonymous_visitors_are_sent_to_sign_in_and_the_api_answers_401(client, objects):
    for name, (method, path, _, _) in PAGES.items():
        response = call(client, method, path(objects))
        assert response.status_code == 302 and response["Location"].startswith("/login/?next="), name
    for name, (method, path, _, _) in API.items():
        assert call(client, method, path(objects)).status_code == 401, name
        assert call(client, method, path(objects), HTTP_AUTHORIZATION="Bearer nonsense").status_code == 401, name


def team_a_state(objects) -> dict:
    """What a request from another team must not change: team A's datasets, jobs, tokens and members' teams."""
    from webapp.datasets.models import Dataset
    from webapp.jobs.models import Job

    objects.job.refresh_from_db()
    objects.spare_token.refresh_from_db()
    return {"datasets": sorted(Dataset.objects.filter(team=objects.team).values_list("pk", flat=True)),
            "jobs": sorted(Job.objects.filter(team=objects.team).values_list("pk", flat=True)),
            "job": (objects.job.state, objects.job.cancel_requested_at),
            "revoked": objects.spare_token.revoked_at, "bob's teams": list(objects.bob.teams.values_list("pk"))}


def test_another_teams_member_gets_404_for_each_team_object_and_sees_none_in_lists(client, objects):
    client.force_login(objects.bob)
    before = team_a_state(objects)
    for name, (method, path, scoped, expected) in PAGES.items():
        response = call(client, method, path(objects))
        assert response.status_code == (404 if scoped else expected), (name, response.status_code)
        if not scoped and not response.streaming:
            assert objects.job.name not in response.content.decode(), name
    # The playground refuses team A's job by name, not just for the missing prompt.
    refused = call(client, "POST", PAGES["results:playground_run"][1](objects)).json()["errors"]
    assert refused["job"] == ["Pick one of your team's finished jobs."], refused
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {objects.other_secret}"}
    for name, (method, path, scoped, expected) in API.items():
        response = call(client, method, path(objects), **bearer)
        assert response.status_code == (404 if scoped else expected), (name, response.status_code)
        if not scoped:
            assert objects.job.name not in response.content.decode(), name
    assert team_a_state(objects) == before


def test_a_member_of_the_owning_team_gets_each_routes_own_answer(client, objects):
    client.force_login(objects.alice)
    answered = {name: call(client, method, path(objects)).status_code
                for name, (method, path, _, _) in PAGES.items()}
    assert answered == {name: case[3] for name, case in PAGES.items()}
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {objects.secret}"}
    answered = {name: call(client, method, path(objects), **bearer).status_code
                for name, (method, path, _, _) in API.items()}
    assert answered == {name: case[3] for name, case in API.items()}


def test_the_admin_and_the_operators_pages_are_for_staff_only(client, objects):
    assert client.get("/admin/").status_code == 302
    for path in STAFF_ONLY.values():
        response = client.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/login/?next="), path
    client.force_login(objects.bob)
    response = client.get("/admin/datasets/dataset/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    for path in STAFF_ONLY.values():
        assert client.get(path).status_code == 403, path


def test_the_readme_states_the_matrix_counts_exactly():
    """The README's figures are the requests this file makes: as another team's member, each page and API route
    once (those on team objects must be 404); anonymously, each page once and each API route twice (no token, a
    bad one)."""
    import re

    row = next(line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| cross-team |"))
    cross_team, on_objects, others = map(int, re.search(
        r"(\d+) cross-team requests \((\d+) on team objects, all 404; (\d+) lists, forms", row).groups())
    anonymous = int(re.search(r"(\d+) anonymous requests refused", row).group(1))
    scoped = sum(case[2] for case in PAGES.values()) + sum(case[2] for case in API.values())
    assert (cross_team, on_objects, others) == (len(PAGES) + len(API), scoped, len(PAGES) + len(API) - scoped)
    assert anonymous == len(PAGES) + 2 * len(API)
    assert len(PAGES) + len(API) == len(route_names() - PUBLIC - set(STAFF_ONLY))
