"""`openai_view`: Bearer-token auth (the same tokens and team scoping as /api/), allowed methods, the per-token
rate limit, and every failure answered in OpenAI's error shape."""
import logging
from functools import wraps

from django.http import Http404
from django.views.decorators.csrf import csrf_exempt

from webapp.api.decorators import admit
from webapp.api.errors import ApiError
from webapp.serving.errors import OpenAIError, error_response

log = logging.getLogger(__name__)
RATE_ACTION = "serving"  # settings.API_RATE_LIMIT_SERVING


def openai_view(*methods: str, rate_limited: bool = False):
    def decorate(view):
        @csrf_exempt
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            try:
                admit(request, methods, RATE_ACTION if rate_limited else None)
                return view(request, *args, **kwargs)
            except OpenAIError as error:
                return error_response(error)
            except ApiError as error:  # from the shared method, token and rate checks: same status, OpenAI's shape
                return error_response(OpenAIError(error.status, error.message, headers=error.headers))
            except Http404:
                return error_response(OpenAIError(404, f"no route {request.path}", code="not_found"))
            except Exception:
                log.exception("/v1 error in %s %s", request.method, request.path)
                return error_response(OpenAIError(500, "internal error; it has been logged"))

        return wrapper

    return decorate


@csrf_exempt
def unknown_route(request, *args, **kwargs):
    return error_response(OpenAIError(404, f"no route {request.path}; see the README's /v1 section",
                                      code="not_found"))
