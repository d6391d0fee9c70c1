"""GET /api/models and /api/models/{id}: the base-model catalog (global, the same for every team)."""
from django.http import JsonResponse
from django.shortcuts import get_object_or_404

from webapp.api.decorators import api_view
from webapp.api.pagination import page_response
from webapp.api.serialize import base_model_json
from webapp.catalog.models import BaseModel


@api_view("GET")
def models_list(request):
    return page_response(request, BaseModel.objects.all(), base_model_json)


@api_view("GET")
def model_detail(request, model_id: int):
    return JsonResponse(base_model_json(get_object_or_404(BaseModel, pk=model_id)))
