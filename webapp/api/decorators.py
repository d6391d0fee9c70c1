"""`api_view`: what every API endpoint shares — Bearer-token auth, allowed methods, JSON errors, rate limits.

The token decides both the user and the team: `request.user`, `request.team` and `request.api_token` are set
from it, so the same team scoping helpers as the pages apply. A revoked token is refused on its next request.
"""
import json
import logging
from functools import wraps

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import Http404
from django.http.multipartparser import MultiPartParserError
from django.views.decorators.csrf import csrf_exempt

from webapp.accounts.tokens import authenticate
from webapp.api.errors import ApiError, error_response
from webapp.api.ratelimit import check_rate

log = logging.getLogger(__name__)


def bearer_secret(request) -> str | None:
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    return secret.strip() if scheme.lower() == "bearer" and secret.strip() else None


def authenticated(request):
    """Set `request.user`, `request.team` and `request.api_token` from the Bearer token and return the token, or
    raise a 401 ApiError saying what is missing."""
    secret = bearer_secret(request)
    token = authenticate(secret) if secret else None
    if token is None:
        message = "invalid or revoked API token" if secret else "send an API token as 'Authorization: Bearer <token>'"
        raise ApiError(401, message, headers={"WWW-Authenticate": 'Bearer realm="loraworks"'})
    request.user, request.team, request.api_token = token.user, token.team, token
    return token


def admit(request, methods: tuple[str, ...], rate_action: str | None = None) -> None:
    """What a token endpoint checks before its view runs (/api/ and /v1 alike): the method is one of `methods`
    (405), the Bearer token is valid (401; sets request.user, .team and .api_token) and, given `rate_action`, the
    token is within that action's rate (429). Raises ApiError; /v1 answers it in OpenAI's shape."""
    if request.method not in methods:
        raise ApiError(405, f"{request.method} is not allowed here; use {', '.join(methods)}",
                       headers={"Allow": ", ".join(methods)})
    token = authenticated(request)
    if rate_action:
        check_rate(token.pk, rate_action)


def api_view(*methods: str, rate: dict[str, str] | None = None):
    """Wrap a function view as an API endpoint answering `methods`; `rate` maps a method to its rate-limit action."""

    def decorate(view):
        @csrf_exempt
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            try:
                admit(request, methods, (rate or {}).get(request.method))
                return view(request, *args, **kwargs)
            except ApiError as error:
                return error_response(error)
            except Http404:
                return error_response(ApiError(404, "not found (or it belongs to another team)"))
            except RequestDataTooBig:
                return error_response(ApiError(413, "request body too large"))
            except (MultiPartParserError, SuspiciousOperation) as exc:
                return error_response(ApiError(400, f"malformed request: {exc}"))
            except Exception:
                # Scripts parse our errors: even a bug answers in the API's JSON shape (and is logged in full).
                log.exception("API error in %s %s", request.method, request.path)
                return error_response(ApiError(500, "internal error; it has been logged"))

        wrapper.api_methods = methods
        return wrapper

    return decorate


@csrf_exempt
def unknown_route(request, *args, **kwargs):
    """Any other path under /api/: a JSON 404 (not the site's HTML page), so clients always get the API's shape."""
    return error_response(ApiError(404, f"no API route {request.path}; see /api/docs"))


def read_json(request) -> dict:
    """The request's JSON object body, or a 400/413 ApiError saying what is wrong with it."""
    if int(request.headers.get("Content-Length") or 0) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
        raise ApiError(413, f"JSON bodies may be at most {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes")
    try:
        data = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object")
    return data
