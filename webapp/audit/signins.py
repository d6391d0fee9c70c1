"""Sign-ins and failed sign-ins, from Django's auth signals: one row in each team of the user (a failed sign-in
under a name nobody has gets one row without a team, which only admins see)."""
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.dispatch import receiver

from webapp.audit.record import Action, record
from webapp.teams.models import Membership


def _teams_of(user) -> list:
    return [m.team for m in Membership.objects.filter(user=user).select_related("team")] or [None]


@receiver(user_logged_in, dispatch_uid="audit-sign-in")
def signed_in(sender, request, user, **kwargs):
    if request is None:  # a test client's force_login, or a script: no address to record
        return
    for team in _teams_of(user):
        record(request, Action.SIGN_IN, team, user=user)


@receiver(user_login_failed, dispatch_uid="audit-sign-in-failed")
def sign_in_failed(sender, credentials, request=None, **kwargs):
    if request is None:
        return
    typed = str(credentials.get("username", ""))[:150]
    user = get_user_model().objects.filter(username=typed).first()
    for team in _teams_of(user) if user else [None]:
        record(request, Action.SIGN_IN_FAILED, team, user=user, username=typed)
