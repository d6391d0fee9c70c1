"""`manage.py create_user USERNAME --team NAME [--role owner|member] [--password P]`: sign-up is off, so admins add people."""
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from webapp.teams.accounts import add_user_to_team
from webapp.teams.models import Membership


class Command(BaseCommand):
    help = "Create a user (or reuse an existing one) and add them to a team, creating the team if needed."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--team", required=True, help="team name; created if it does not exist")
        parser.add_argument("--role", choices=[r.value for r in Membership.Role], default=Membership.Role.MEMBER)
        parser.add_argument("--password", help="default: a random one, printed once")
        parser.add_argument("--email", default="")

    def handle(self, *args, username, team, role, password, email, **options):
        users = get_user_model().objects
        if users.filter(username=username).exists():
            if password:
                raise CommandError(f"user {username!r} already exists; not changing their password")
            self.stdout.write(f"user {username} exists")
        else:
            password = password or secrets.token_urlsafe(12)
            users.create_user(username=username, email=email, password=password)
            self.stdout.write(f"created user {username} with password {password}")
        membership = add_user_to_team(username, team, role)
        self.stdout.write(f"{username} is {membership.role} of team {membership.team.name}")
