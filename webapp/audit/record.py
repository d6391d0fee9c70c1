"""Writing audit rows: `record(request, action, team, target)` takes who, from where and through which door from
the request. The address is the connection's (REMOTE_ADDR), as the login throttle counts it."""
from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import validate_ipv46_address

from webapp.audit.models import AuditEvent

Action = AuditEvent.Action


def client_ip(request) -> str | None:
    address = request.META.get("REMOTE_ADDR") or ""
    try:
        validate_ipv46_address(address)
    except ValidationError:
        return None
    return address


def record(request, action: str, team, target: str = "", *, user=None, username: str | None = None) -> AuditEvent:
    """One audit row for `action` on `target` in `team`, by `user` (default: the request's signed-in user)."""
    if user is None and getattr(request, "user", None) is not None and request.user.is_authenticated:
        user = request.user
    return AuditEvent.objects.create(
        team=team, user=user, username=(username if username is not None else getattr(user, "username", ""))[:150],
        action=action, target=target[:300], ip=client_ip(request),
        via="api" if getattr(request, "api_token", None) is not None else "web")


def describe(kind: str, obj) -> str:
    """How a job or dataset is named in the log: `job 12 “name”` (its id stays readable after it is deleted)."""
    return f"{kind} {obj.pk} “{obj.name}”"
