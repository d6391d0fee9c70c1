"""Issuing, checking and revoking API tokens: the one place that knows how a token's secret looks and is hashed."""
import hashlib
import secrets
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from webapp.accounts.models import ApiToken
from webapp.teams.models import Membership

SECRET_PREFIX = "lw_"
PREFIX_LENGTH = 10
# last_used_at is written at most this often per token, so busy scripts do not turn every GET into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@transaction.atomic
def issue_token(user, team, name: str) -> tuple[ApiToken, str]:
    """Create a token for `user` acting in `team`; returns it and its secret (not stored anywhere)."""
    if not Membership.objects.filter(user=user, team=team).exists():
        raise ValueError(f"{user} is not a member of team {team}")
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)  # 256 bits of entropy
    token = ApiToken.objects.create(team=team, created_by=user, user=user, name=name.strip() or "token",
                                    token_hash=hash_secret(secret), prefix=secret[:PREFIX_LENGTH])
    return token, secret


def authenticate(secret: str) -> ApiToken | None:
    """The live token for `secret`, or None if it is unknown, revoked, or its user left the team or is disabled."""
    if not secret.startswith(SECRET_PREFIX) or len(secret) > 200:
        return None
    token = (ApiToken.objects.select_related("user", "team")
             .filter(token_hash=hash_secret(secret), revoked_at__isnull=True).first())
    if token is None or not token.user.is_active:
        return None
    if not Membership.objects.filter(user_id=token.user_id, team_id=token.team_id).exists():
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token


def revoke(token: ApiToken) -> None:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
