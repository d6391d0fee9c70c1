"""Login throttling: too many failed sign-ins for one username, or from one address, within a window are refused
with 429 until the window has passed, so passwords cannot be guessed at speed.

Counts live in Redis (settings.REDIS_URL) so every web process shares them; if Redis cannot be reached the sign-in
goes ahead (logged), since refusing every login would be worse than an unthrottled minute. A successful sign-in
clears its username's count. Limits: LOGIN_MAX_FAILURES per username (default 5), LOGIN_MAX_FAILURES_PER_ADDRESS
per address (default 30), counted over LOGIN_WINDOW_S seconds (default 900).
"""
import logging
from functools import wraps
from types import SimpleNamespace

import redis
from django.conf import settings
from django.shortcuts import render

log = logging.getLogger(__name__)


def limits() -> tuple[int, int, int]:
    return settings.LOGIN_MAX_FAILURES, settings.LOGIN_MAX_FAILURES_PER_ADDRESS, settings.LOGIN_WINDOW_S


def keys(request) -> tuple[str, str]:
    username = request.POST.get("username", "").strip().lower()[:150]
    return f"login-failures:user:{username}", f"login-failures:addr:{request.META.get('REMOTE_ADDR', '')}"


def refused_form(username: str, message: str) -> SimpleNamespace:
    """What the login template reads from its form (the typed username, the error), without checking a password."""
    return SimpleNamespace(username=SimpleNamespace(value=username), non_field_errors=[message])


def throttled(view):
    """Wrap the login view: POSTs over the limit answer 429 with the login page and a message saying when to retry."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if request.method != "POST":
            return view(request, *args, **kwargs)
        per_user, per_address, window_s = limits()
        user_key, address_key = keys(request)
        try:
            client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1)
            user_count, address_count = (int(n or 0) for n in client.mget(user_key, address_key))
        except redis.RedisError as error:
            log.warning("login throttle unavailable (%s); signing in without it", error)
            return view(request, *args, **kwargs)
        if user_count >= per_user or address_count >= per_address:
            wait_s = max(client.ttl(user_key if user_count >= per_user else address_key), 1)
            minutes = -(-wait_s // 60)
            message = f"Too many failed sign-ins. Try again in {minutes} minute{'s' if minutes != 1 else ''}."
            return render(request, "registration/login.html", {
                "form": refused_form(request.POST.get("username", ""), message),
                "next": request.POST.get("next", "")}, status=429)
        response = view(request, *args, **kwargs)
        if response.status_code == 302:
            client.delete(user_key)
        else:
            with client.pipeline() as pipe:
                for key in (user_key, address_key):
                    pipe.incr(key)
                    pipe.expire(key, window_s, nx=True)
                pipe.execute()
        return response

    wrapper.login_throttled = True
    return wrapper
