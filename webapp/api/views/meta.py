"""Endpoints about the API itself: who a token is and the server's limits (`/api/me`), the OpenAPI schema and its
rendered reference."""
from django.conf import settings
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from webapp.api.decorators import api_view
from webapp.api.schema import reference_sections, schema


@api_view("GET")
def me(request):
    token = request.api_token
    return JsonResponse({"user": request.user.username, "team": {"id": request.team.pk, "name": request.team.name},
                         "token": {"id": token.pk, "name": token.name, "prefix": token.prefix},
                         "limits": {"max_upload_mb": settings.MAX_UPLOAD_MB}})


@csrf_exempt  # no session use: a POST is told 405, not sent to the CSRF failure page
@require_GET
def openapi_schema(request):
    # Public like any API reference: it describes the API, it holds no team data.
    return JsonResponse(schema(server_url=request.build_absolute_uri("/")), json_dumps_params={"indent": 1})


@csrf_exempt
@require_GET
def reference(request):
    return render(request, "api/reference.html", {"sections": reference_sections(), "info": schema()["info"]})
