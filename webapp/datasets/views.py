"""Datasets pages: list, upload (streamed, size-limited, with a progress bar), detail with the validation report,
a JSON status the detail page polls, re-analysis settings, column mapping, delete, and one-click samples.

Every lookup goes through the team scoping helpers: another team's dataset is a 404.
"""
from __future__ import annotations

import functools

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET, require_POST

from webapp.datasets import charts, samples
from webapp.datasets.forms import AnalysisForm, ColumnMappingForm, UploadForm
from webapp.datasets.models import Dataset
from webapp.datasets.uploads import (SizeLimitedUploadHandler, declared_too_large, label, max_upload_bytes,
                                     too_large_message)
from webapp.datasets.services import DatasetInUse, create_dataset, delete_dataset
from webapp.audit.record import Action, describe, record
from webapp.paging import paged
from webapp.datasets.usage import active_jobs_using
from webapp.teams.quotas import QuotaExceeded
from webapp.teams.scoping import get_team_object_or_404, team_queryset


def team_required(view):
    """The current team must exist: without one there is nothing to list or upload to."""
    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        if request.team is None:
            messages.error(request, "You are not in a team yet. Ask an administrator to add you to one.")
            return redirect("dashboard")
        return view(request, *args, **kwargs)
    return wrapper


@login_required
@team_required
@require_GET
def dataset_list(request):
    datasets = team_queryset(request, Dataset).select_related("created_by")
    search = request.GET.get("q", "").strip()
    if search:
        datasets = datasets.filter(name__icontains=search)
    listing = paged(request, datasets)
    offer_samples = not search and listing["page"].paginator.count == 0
    return render(request, "datasets/list.html", {
        "datasets": listing["page"].object_list, **listing, "search": search,
        "samples": samples.available() if offer_samples else []})


def wants_json(request) -> bool:
    return "application/json" in request.headers.get("Accept", "")


@csrf_exempt
@login_required
@team_required
def upload(request):
    # The upload handler must be in place before anything reads the body, CSRF checking included: so this outer
    # view is exempt and the inner one does the CSRF check once the handler is set.
    if request.method == "POST":
        refusal = declared_too_large(request)
        if refusal:  # answered unread: no CSRF check needed for a request that changes nothing
            return _upload_error(request, UploadForm(), refusal, status=413)
        request.upload_handlers = [SizeLimitedUploadHandler(request, max_upload_bytes())]
    return _upload(request)


@csrf_protect
def _upload(request):
    if request.method != "POST":
        return render(request, "datasets/upload.html", _upload_context(UploadForm()))
    files = request.FILES  # reads the body through the handler (CSRF checking may not have yet)
    handler = request.upload_handlers[0]
    if handler.rejected is not None:
        _discard(files)
        return _upload_error(request, UploadForm(), too_large_message(label(handler.rejected)), status=413)
    form = UploadForm(request.POST, files)
    if not form.is_valid():
        _discard(files)
        return _upload_error(request, form, "The upload was not accepted: see the messages below.", status=400)
    try:
        dataset = create_dataset(request.team, request.user, form.cleaned_data)
    except QuotaExceeded as exceeded:
        _discard(files)
        return _upload_error(request, form, exceeded.message, status=exceeded.status)
    record(request, Action.DATASET_UPLOADED, request.team, describe("dataset", dataset))
    url = reverse("datasets:detail", args=[dataset.pk])
    if wants_json(request):
        return JsonResponse({"ok": True, "url": url, "id": dataset.pk})
    messages.success(request, f"Uploaded “{dataset.name}”: validating it now.")
    return redirect(url)


def _discard(files) -> None:
    for uploaded in files.values():
        uploaded.close()  # a temporary upload file is removed when closed


def _upload_error(request, form, message: str, *, status: int):
    if wants_json(request):
        errors = {field: [str(e) for e in errs] for field, errs in form.errors.items()}
        return JsonResponse({"ok": False, "message": message, "errors": errors}, status=status)
    messages.error(request, message)
    return render(request, "datasets/upload.html", _upload_context(form), status=status)


def _upload_context(form) -> dict:
    return {"form": form, "limit_bytes": max_upload_bytes(), "limit_mb": max_upload_bytes() // 2**20}


@login_required
@team_required
@require_GET
def detail(request, pk: int):
    dataset = get_team_object_or_404(request, Dataset.objects.select_related("analysis_model", "created_by"), pk=pk)
    report = dataset.report or {}
    columns = report.get("columns") or []
    mapping_form = (ColumnMappingForm(columns, initial=ColumnMappingForm.initial_for(dataset.column_mapping))
                    if columns else None)
    return render(request, "datasets/detail.html", {
        "dataset": dataset, "report": report, "problems": row_problems(report, dataset.error),
        "histogram": charts.length_histogram(report.get("histogram") or {}),
        "labels": charts.label_bars(report.get("labels")),
        "analysis_form": AnalysisForm(initial={"analysis_model": dataset.analysis_model_id,
                                               "max_length": dataset.max_length}),
        "mapping_form": mapping_form,
        "active_jobs": active_jobs_using(dataset),
    })


def row_problems(report: dict, error: str) -> list[dict]:
    """The report's problems without the one the page already shows as the dataset's error (a file-level one)."""
    return [p for p in report.get("problems") or [] if not (p.get("row") is None and p.get("message") == error)]


@login_required
@require_GET
def status(request, pk: int):
    dataset = get_team_object_or_404(request, Dataset, pk=pk)
    return JsonResponse({"id": dataset.pk, "status": dataset.status, "progress": round(dataset.progress, 3),
                         "rows": dataset.rows, "revision": dataset.revision, "error": dataset.error})


@login_required
@require_POST
def analyse(request, pk: int):
    dataset = get_team_object_or_404(request, Dataset, pk=pk)
    form = AnalysisForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Pick a ready base model and one of the max lengths offered.")
        return redirect("datasets:detail", pk=pk)
    with transaction.atomic():
        dataset.start_validation(analysis_model=form.cleaned_data["analysis_model"],
                                 max_length=form.cleaned_data["max_length"])
    messages.success(request, "Measuring the dataset again with the new settings.")
    return redirect("datasets:detail", pk=pk)


@login_required
@require_POST
def column_mapping(request, pk: int):
    dataset = get_team_object_or_404(request, Dataset, pk=pk)
    form = ColumnMappingForm((dataset.report or {}).get("columns") or [], request.POST)
    if not form.is_valid():
        messages.error(request, "; ".join(str(e) for errors in form.errors.values() for e in errors))
        return redirect("datasets:detail", pk=pk)
    with transaction.atomic():
        dataset.start_validation(column_mapping=form.mapping)
    messages.success(request, "Column mapping saved: validating the dataset again.")
    return redirect("datasets:detail", pk=pk)


@login_required
@require_POST
def confirm_rows(request, pk: int):
    dataset = get_team_object_or_404(request, Dataset, pk=pk)
    if dataset.status != Dataset.Status.READY:
        messages.error(request, "Only a validated dataset's good rows can be confirmed.")
    else:
        dataset.confirm_good_rows()
        messages.success(request, f"Jobs can now train on the {dataset.good_rows} good rows of “{dataset.name}”.")
    return redirect("datasets:detail", pk=pk)


@login_required
@require_POST
def delete(request, pk: int):
    dataset = get_team_object_or_404(request, Dataset, pk=pk)
    target = describe("dataset", dataset)  # before the row (and its pk) is gone
    try:
        delete_dataset(dataset)
    except DatasetInUse as refused:
        messages.error(request, str(refused))
        return redirect("datasets:detail", pk=pk)
    record(request, Action.DATASET_DELETED, request.team, target)
    messages.success(request, f"Deleted “{dataset.name}”.")
    return redirect("datasets:list")


@login_required
@team_required
@require_POST
def use_sample(request, name: str):
    try:
        dataset = samples.create_from_sample(request.team, request.user, name)
    except KeyError:
        messages.error(request, f"There is no sample called {name!r}.")
        return redirect("datasets:list")
    except QuotaExceeded as exceeded:
        messages.error(request, exceeded.message)
        return redirect("datasets:list")
    record(request, Action.DATASET_UPLOADED, request.team, describe("dataset", dataset) + " (a sample)")
    messages.success(request, f"Added the sample “{dataset.name}”: validating it now.")
    return redirect("datasets:detail", pk=dataset.pk)
