"""`manage.py create_api_token USER --team TEAM [--name N]`: issue an API token and print its secret once."""
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from webapp.accounts.tokens import issue_token
from webapp.teams.models import Team


class Command(BaseCommand):
    help = "Create an API token for a user acting in one of their teams; prints the secret (shown only once)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--team", required=True, help="name of a team the user belongs to")
        parser.add_argument("--name", default="cli", help="label shown on the settings page")

    def handle(self, *args, username, team, name, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user named {username!r}")
        team_obj = Team.objects.filter(name=team).first()
        if team_obj is None:
            raise CommandError(f"no team named {team!r}")
        try:
            _, secret = issue_token(user, team_obj, name)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(secret)
