"""Teams: sign-in, the current team, switching, and that another team's things are invisible (404)."""
import pytest
from django.core.management import call_command
from django.urls import reverse

from webapp.teams.models import Membership, Team
from webapp.teams.scoping import get_team_object_or_404, team_queryset


def test_anonymous_visitors_are_sent_to_sign_in(client, db):
    response = client.get(reverse("dashboard"))
    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


def test_a_member_signs_in_and_sees_their_team_dashboard(client, make_member):
    make_member("alice", "Team A", password="correct-horse-9")
    response = client.post(reverse("login"), {"username": "alice", "password": "correct-horse-9"}, follow=True)
    assert response.status_code == 200
    assert b"Team A" in response.content
    assert b"Fine-tune your first model in three steps" in response.content


def test_a_member_of_team_a_gets_404_for_team_b_pages(member_client, make_member):
    make_member("bob", "Team B")
    team_b = Team.objects.get(name="Team B")
    assert member_client.get(reverse("team_detail", args=[team_b.pk])).status_code == 404
    team_a = Team.objects.get(name="Team A")
    own = member_client.get(reverse("team_detail", args=[team_a.pk]))
    assert own.status_code == 200 and b"alice" in own.content


def test_team_queryset_keeps_only_the_current_teams_rows(rf, make_member):
    make_member("alice", "Team A")
    make_member("bob", "Team B")
    request = rf.get("/")
    request.team = Team.objects.get(name="Team A")
    rows = team_queryset(request, Membership)
    assert [m.user.username for m in rows] == ["alice"]
    bobs = Membership.objects.get(user__username="bob")
    with pytest.raises(Exception) as raised:
        get_team_object_or_404(request, Membership, pk=bobs.pk)
    assert raised.type.__name__ == "Http404"


def test_a_request_without_a_team_sees_nothing(rf, make_member):
    make_member("alice", "Team A")
    request = rf.get("/")
    request.team = None
    assert team_queryset(request, Membership).count() == 0


def test_a_user_in_two_teams_switches_between_them(member_client, make_member):
    make_member("alice", "Team Z")
    team_z = Team.objects.get(name="Team Z")
    response = member_client.post(reverse("switch_team"), {"team": team_z.pk, "next": "/"}, follow=True)
    assert response.status_code == 200
    assert response.context["current_team"] == team_z


def test_switching_to_a_team_you_are_not_in_is_404(member_client, make_member):
    make_member("bob", "Team B")
    team_b = Team.objects.get(name="Team B")
    response = member_client.post(reverse("switch_team"), {"team": team_b.pk})
    assert response.status_code == 404


def test_switch_team_ignores_a_redirect_to_another_site(member_client):
    team_a = Team.objects.get(name="Team A")
    response = member_client.post(reverse("switch_team"), {"team": team_a.pk, "next": "https://evil.example/"})
    assert response.status_code == 302 and response.url == reverse("dashboard")


def test_create_user_command_adds_a_person_to_a_new_team(db, capsys):
    call_command("create_user", "carol", "--team", "Research", "--role", "owner", "--password", "s3cret-pass-x")
    membership = Membership.objects.get(user__username="carol")
    assert (membership.team.name, membership.role) == ("Research", "owner")
    assert membership.user.check_password("s3cret-pass-x")


def test_create_demo_prints_credentials_that_sign_in(client, db, settings, tmp_path, capsys):
    settings.VAR_DIR = tmp_path
    call_command("create_demo")
    out = capsys.readouterr().out
    password = out.strip().rsplit(" ", 1)[-1]
    assert client.login(username="demo", password=password)
    call_command("create_demo")
    assert capsys.readouterr().out == out, "a second run prints the same, still valid, credentials"
    assert Membership.objects.get(user__username="demo").role == "owner"


def test_admin_lists_teams_and_memberships(admin_client, make_member):
    make_member("alice", "Team A")
    assert b"Team A" in admin_client.get("/admin/teams/team/").content
    assert b"alice" in admin_client.get("/admin/teams/membership/").content
