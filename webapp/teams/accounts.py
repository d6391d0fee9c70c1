"""Creating users and putting them in teams: shared by the management commands and the tests."""
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils.text import slugify

from webapp.teams.models import Membership, Team


@transaction.atomic
def add_user_to_team(username: str, team_name: str, role: str = Membership.Role.MEMBER) -> Membership:
    user = get_user_model().objects.get(username=username)
    team, _ = Team.objects.get_or_create(name=team_name, defaults={"slug": unique_slug(team_name)})
    membership, created = Membership.objects.get_or_create(team=team, user=user, defaults={"role": role})
    if not created and membership.role != role:
        membership.role = role
        membership.save(update_fields=["role"])
    return membership


def unique_slug(name: str) -> str:
    base = slugify(name)[:90] or "team"
    slug, n = base, 1
    while Team.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return slug
