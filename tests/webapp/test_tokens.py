"""API tokens: created on the settings page or by command (shown once, stored hashed), accepted as Bearer
tokens, scoped to one team, and refused on the very next request once revoked."""
import hashlib
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from webapp.accounts.models import ApiToken
from webapp.accounts.tokens import issue_token
from webapp.teams.models import Team


def bearer(secret):
    return {"HTTP_AUTHORIZATION": f"Bearer {secret}"}


def test_the_settings_page_creates_a_token_shows_it_once_and_stores_only_its_hash(member_client):
    team = Team.objects.get(name="Team A")
    created = member_client.post(reverse("accounts:settings"), {"name": "nightly", "team": team.pk})
    assert created.status_code == 302 and created.url == reverse("accounts:settings")  # POST-redirect-GET
    response = member_client.get(created.url)
    secret = response.context["new_secret"]
    assert secret.startswith("lw_") and secret.encode() in response.content
    token = ApiToken.objects.get(name="nightly")
    assert token.token_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert token.user == member_client.user and token.team == team
    assert not ApiToken.objects.filter(token_hash=secret).exists()
    again = member_client.get(reverse("accounts:settings"))
    assert b"nightly" in again.content and secret.encode() not in again.content
    assert token.prefix.encode() in again.content


def test_a_token_cannot_be_made_for_a_team_the_user_is_not_in(member_client, make_member):
    make_member("bob", "Team B")
    team_b = Team.objects.get(name="Team B")
    response = member_client.post(reverse("accounts:settings"), {"name": "sneaky", "team": team_b.pk})
    assert response.status_code == 200 and response.context["form"].errors["team"]
    assert not ApiToken.objects.exists()


def test_anonymous_visitors_are_sent_to_sign_in_from_settings(client, db):
    response = client.get(reverse("accounts:settings"))
    assert response.status_code == 302 and response.url.startswith(reverse("login"))


def test_revoking_on_the_settings_page_refuses_the_token_at_once(member_client):
    token, secret = issue_token(member_client.user, Team.objects.get(name="Team A"), "ci")
    assert member_client.get(reverse("api:me"), **bearer(secret)).status_code == 200
    response = member_client.post(reverse("accounts:revoke_token", args=[token.pk]))
    assert response.status_code == 302
    refused = member_client.get(reverse("api:me"), **bearer(secret))
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "unauthorized"
    assert refused["WWW-Authenticate"].startswith("Bearer")


def test_someone_elses_token_cannot_be_revoked(member_client, make_member):
    bob = make_member("bob", "Team A")
    token, secret = issue_token(bob, Team.objects.get(name="Team A"), "bobs")
    assert member_client.post(reverse("accounts:revoke_token", args=[token.pk])).status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None


def test_the_command_prints_a_working_token(make_member, client):
    make_member("carol", "Team C")
    out = StringIO()
    call_command("create_api_token", "carol", "--team", "Team C", "--name", "laptop", stdout=out)
    secret = out.getvalue().strip()
    me = client.get(reverse("api:me"), **bearer(secret)).json()
    assert me["user"] == "carol" and me["team"]["name"] == "Team C" and me["token"]["name"] == "laptop"


def test_the_command_refuses_unknown_users_teams_and_non_members(make_member):
    make_member("carol", "Team C")
    make_member("dave", "Team D")
    for args, message in ((["nobody", "--team", "Team C"], "no user"), (["carol", "--team", "Nope"], "no team"),
                          (["carol", "--team", "Team D"], "not a member")):
        with pytest.raises(CommandError, match=message):
            call_command("create_api_token", *args, stdout=StringIO())


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer lw_wrong", "Token abc", "Basic dXNlcjpwdw=="])
def test_requests_without_a_valid_bearer_token_get_401_in_json(client, db, header):
    extra = {"HTTP_AUTHORIZATION": header} if header else {}
    response = client.get(reverse("api:models"), **extra)
    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    assert set(response.json()["error"]) == {"code", "message"}


def test_a_token_stops_working_when_its_user_leaves_the_team(make_member, client):
    user = make_member("erin", "Team E")
    _, secret = issue_token(user, Team.objects.get(name="Team E"), "x")
    user.memberships.all().delete()
    assert client.get(reverse("api:me"), **bearer(secret)).status_code == 401


def test_a_token_acts_for_its_own_team_whatever_the_sessions_team(member_client, make_member):
    make_member("alice", "Team B")
    _, secret = issue_token(member_client.user, Team.objects.get(name="Team B"), "b")
    assert member_client.get(reverse("api:me"), **bearer(secret)).json()["team"]["name"] == "Team B"


def test_last_used_is_recorded(member_client):
    token, secret = issue_token(member_client.user, Team.objects.get(name="Team A"), "ci")
    member_client.get(reverse("api:me"), **bearer(secret))
    token.refresh_from_db()
    assert token.last_used_at is not None
