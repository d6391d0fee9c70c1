"""`manage.py create_demo`: the demo user and team for a local run; prints the sign-in details.

The password is generated on first run and kept in var/demo_password (mode 0600) so later runs can print it again.
"""
import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from webapp.teams.accounts import add_user_to_team
from webapp.teams.models import Membership

DEMO_USERNAME = "demo"
DEMO_TEAM = "Demo team"


class Command(BaseCommand):
    help = "Create the demo user and team if they do not exist, and print the credentials."

    def handle(self, *args, **options):
        password_file = settings.VAR_DIR / "demo_password"
        users = get_user_model().objects
        user = users.filter(username=DEMO_USERNAME).first()
        if user is None or not password_file.exists():
            password = secrets.token_urlsafe(9)
            password_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(password)
            user = user or users.create_user(username=DEMO_USERNAME)
            user.set_password(password)
            user.save()
        password = password_file.read_text().strip()
        add_user_to_team(DEMO_USERNAME, DEMO_TEAM, Membership.Role.OWNER)
        self.stdout.write(f"Demo sign-in: user {DEMO_USERNAME} / password {password}")
