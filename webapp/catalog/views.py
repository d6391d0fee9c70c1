"""Catalog pages: the list of base models (demo badge, status) and one model's details with its layer shapes."""
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, render

from webapp.catalog.models import BaseModel


@login_required
def model_list(request):
    entries = list(BaseModel.objects.all())
    # While a model is being inspected (or the demo LM built), the page reloads itself to follow it.
    inspecting = any(entry.status == BaseModel.Status.INSPECTING for entry in entries)
    return render(request, "catalog/list.html", {"entries": entries, "inspecting": inspecting})


@login_required
def model_detail(request, pk: int):
    entry = get_object_or_404(BaseModel, pk=pk)
    layers = entry.info.get("linear_layers", [])
    return render(request, "catalog/detail.html", {"entry": entry, "layers": layers})
