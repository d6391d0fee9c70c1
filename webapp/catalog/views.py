"""Catalog pages: the list of base models (demo badge, status) and one model's details with its layer shapes."""
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, render

from webapp.catalog.models import BaseModel


@login_required
def model_list(request):
    return render(request, "catalog/list.html", {"entries": BaseModel.objects.all()})


@login_required
def model_detail(request, pk: int):
    entry = get_object_or_404(BaseModel, pk=pk)
    layers = entry.info.get("linear_layers", [])
    return render(request, "catalog/detail.html", {"entry": entry, "layers": layers})
