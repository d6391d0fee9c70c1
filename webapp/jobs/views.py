"""Job pages: list (filter by state), create (with the live estimate and Clone), detail, cancel, and the progress
feeds the detail page listens to (server-sent events from Redis, and a JSON snapshot for polling)."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from webapp.catalog.models import BaseModel
from webapp.datasets.models import Dataset
from webapp.jobs import live, queue, services, states
from webapp.jobs.forms import JobForm, initial_from
from webapp.jobs.models import Job
from webapp.jobs.stream import progress_snapshot, sse_response
from webapp.ops import checks
from webapp.teams.scoping import get_team_object_or_404, team_queryset

STATE_FILTERS = [s for s, _ in states.CHOICES]


@login_required
def job_list(request):
    jobs = team_queryset(request, Job).select_related("base_model", "dataset")
    state = request.GET.get("state", "")
    if state in STATE_FILTERS:
        jobs = jobs.filter(state=state)
    return render(request, "jobs/list.html", {"jobs": jobs[:200], "state": state, "states": STATE_FILTERS})


def _datasets(request):
    return services.selectable_datasets(request)


@login_required
def job_create(request):
    if request.team is None:
        raise Http404("no team")
    datasets = _datasets(request)
    if request.method == "POST":
        form = JobForm(request.POST, datasets=datasets)
        if form.is_valid():
            job = _create(request, form)
            messages.success(request, f"Job “{job.name}” is {job.state}.")
            return redirect("jobs:detail", pk=job.pk)
    else:
        initial = {}
        if request.GET.get("clone"):
            initial = initial_from(get_team_object_or_404(request, Job, pk=request.GET["clone"]))
        elif request.GET.get("dataset"):
            initial = {"dataset": request.GET["dataset"]}
        form = JobForm(initial=initial, datasets=datasets)
    models = BaseModel.objects.filter(status=BaseModel.Status.READY)
    return render(request, "jobs/create.html", {"form": form, "models": models, "datasets": datasets})


def _create(request, form) -> Job:
    return services.create_job(request.team, request.user, form)


@login_required
@require_GET
def estimate(request):
    """The live estimate for the form: parameter counts, sizes and peak memory, from the model's recorded shapes."""
    from trainer.errors import TrainerError
    from trainer.estimate import estimate as compute

    model = BaseModel.objects.filter(pk=request.GET.get("base_model") or 0, status=BaseModel.Status.READY).first()
    if model is None:
        return JsonResponse({"error": "pick a base model that is ready"}, status=400)
    try:
        numbers = {name: int(request.GET.get(name, "")) for name in ("rank", "batch_size", "max_length")}
    except ValueError:
        return JsonResponse({"error": "rank, batch size and max length must be whole numbers"}, status=400)
    if min(numbers.values()) < 1:
        return JsonResponse({"error": "rank, batch size and max length must be at least 1"}, status=400)
    task = request.GET.get("task") or model.default_task
    try:
        result = compute(model.info, targets=request.GET.get("targets") or "attention", task=task,
                         num_labels=dataset_label_count(request), **numbers)
    except TrainerError as error:
        return JsonResponse({"error": str(error)}, status=400)
    return JsonResponse(result)


def dataset_label_count(request) -> int | None:
    """How many labels the request's `dataset` (one of the team's) has, when it is a classification set."""
    pk = request.GET.get("dataset", "")
    dataset = team_queryset(request, Dataset).filter(pk=pk).first() if pk.isdigit() else None
    labels = (dataset.report or {}).get("labels") if dataset else None
    return len(labels) if labels else None


@login_required
def job_detail(request, pk: int):
    job = get_team_object_or_404(request, Job.objects.select_related("base_model", "dataset", "eval_dataset"), pk=pk)
    snapshot = progress_snapshot(job)
    context = {"job": job, "snapshot": snapshot, "log_text": "\n".join(snapshot["log"]),
               "position": snapshot["position"], "events": job.events.all(),
               "cancelling": job.state == states.RUNNING and (bool(job.cancel_requested_at) or _cancel_flag(job)),
               "silent": queue.silent_worker(job),
               "class_unserved": _class_unserved(job)}
    return render(request, "jobs/detail.html", context)


def _class_unserved(job) -> bool:
    """A queued job whose worker class no live worker serves (the workers are asked only for such a job)."""
    return (job.state == states.QUEUED and bool(job.worker_class)
            and job.worker_class not in checks.live_worker_classes())


def _cancel_flag(job) -> bool:
    try:
        return live.cancel_requested(job.pk)
    except Exception:  # Redis down: the page still renders
        return False


@login_required
@require_POST
def job_cancel(request, pk: int):
    job = get_team_object_or_404(request, Job, pk=pk)
    outcome = queue.cancel(job, request.user.username)
    if outcome == "cancelled":
        messages.success(request, "Job cancelled.")
    elif outcome == "stopping":
        messages.info(request, "Stopping at the next step; the last checkpoint is kept.")
    else:
        messages.warning(request, f"Nothing to cancel: {outcome}.")
    return redirect("jobs:detail", pk=job.pk)


@login_required
@require_GET
def job_progress(request, pk: int):
    job = get_team_object_or_404(request, Job, pk=pk)
    try:
        since = int(request.GET.get("since", -1))
    except ValueError:
        since = -1
    return JsonResponse(progress_snapshot(job, since_step=since))


@login_required
@require_GET
def job_stream(request, pk: int):
    job = get_team_object_or_404(request, Job, pk=pk)
    return sse_response(job)
