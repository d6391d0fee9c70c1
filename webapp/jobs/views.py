"""Job pages: list (paged, filtered by state, searched by name), create (with the live estimate, the settings
advisor's proposal and Clone), detail,
cancel, delete, and the progress feeds the detail page listens to (server-sent events from Redis, and a JSON
snapshot for polling)."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import F
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from trainer.advice import values
from trainer.config import DTYPE_CHOICES, QUANTIZE_CHOICES
from trainer.errors import TrainerError
from webapp.audit.record import Action, describe, record
from webapp.catalog.models import BaseModel
from webapp.datasets.models import Dataset
from webapp.fragments import render_each
from webapp.jobs import live, queue, services, states
from webapp.jobs.advice import advice_for, as_json
from webapp.jobs.deletion import JobStillStopping, delete_job
from webapp.jobs.forms import JobForm, continuing, initial_from
from webapp.jobs.models import Job, percent_done
from webapp.jobs.stream import progress_snapshot, sse_response
from webapp.ops import checks
from webapp.paging import paged
from webapp.results.summary import setting_rows
from webapp.teams.quotas import QuotaExceeded
from webapp.teams.scoping import get_team_object_or_404, team_queryset

STATE_FILTERS = [s for s, _ in states.CHOICES]


# What a row of the job list shows, read as plain values: the rest (history, metrics, reports, layer shapes) is
# large JSON that each row would otherwise decode for nothing, and a row needs no model instance.
LIST_FIELDS = ("pk", "name", "task", "state", "progress", "worker_name", "worker_class", "started_at",
               "finished_at")
LIST_RELATED = {"base_model_name": F("base_model__name"), "base_model_is_demo": F("base_model__is_demo"),
                "dataset_name": F("dataset__name")}


@login_required
def job_list(request):
    jobs = team_queryset(request, Job)
    state, search = request.GET.get("state", ""), request.GET.get("q", "").strip()
    if state in STATE_FILTERS:
        jobs = jobs.filter(state=state)
    if search:
        jobs = jobs.filter(name__icontains=search)
    listing = paged(request, jobs)  # counted without the joins the rows need
    shown = listing["page"].object_list.values(*LIST_FIELDS, **LIST_RELATED)
    rows = render_each("jobs/_row.html", "job", [_row(job) for job in shown],
                       scope=request.team.pk if request.team else None)
    return render(request, "jobs/list.html", {"rows": rows, **listing, "state": state, "search": search,
                                              "states": STATE_FILTERS})


def _row(job: dict) -> dict:
    """A job list row: only the progress it shows (a running job's loss and rate change with every write)."""
    progress = job["progress"] or {}
    return {**job, "progress": {k: progress[k] for k in ("step", "total_steps") if k in progress},
            "percent": percent_done(job["state"], progress)}


def _datasets(request):
    return services.selectable_datasets(request)


@login_required
def job_create(request):
    if request.team is None:
        raise Http404("no team")
    datasets = _datasets(request)
    status, refused = 200, None
    if request.method == "POST":
        form = JobForm(request.POST, datasets=datasets, jobs=services.continuable_jobs(request))
        if form.is_valid():
            try:
                job = services.create_job(request.team, request.user, form)
            except QuotaExceeded as exceeded:  # the form stays filled in, with the reason on top
                status, refused = exceeded.status, exceeded
            else:
                record(request, Action.JOB_CREATED, request.team, describe("job", job))
                messages.success(request, f"Created job “{job.name}”.")  # its state lives in the badge, kept current
                return redirect("jobs:detail", pk=job.pk)
    else:
        initial = {}
        if request.GET.get("clone"):
            initial = initial_from(get_team_object_or_404(request, Job, pk=request.GET["clone"]))
        elif request.GET.get("continue"):
            initial = continuing(get_team_object_or_404(request, Job, pk=request.GET["continue"]))
        elif request.GET.get("dataset"):
            initial = {"dataset": request.GET["dataset"]}
    models = BaseModel.objects.filter(status=BaseModel.Status.READY)
    if request.method != "POST":
        initial.setdefault("base_model", fitting_model(models, datasets, initial.get("dataset")))
        # A clone or a continuation carries its job's settings; only a fresh form starts from the advice.
        carried = request.GET.get("clone") or request.GET.get("continue")
        advice = {} if carried else _first_advice(models, datasets, initial)
        form = JobForm(initial={**values(advice), **initial}, datasets=datasets,
                       jobs=services.continuable_jobs(request))
        form.show_advice(advice)
    return render(request, "jobs/create.html", {"form": form, "models": models, "datasets": datasets,
                                                "refused": refused}, status=status)


def _first_advice(models, datasets, initial: dict) -> dict:
    """The advisor's settings for the model and dataset the form opens with ({} when there is none)."""
    dataset = _pick(datasets, initial.get("dataset"))
    model = _pick(models, initial.get("base_model"))
    if model is None or dataset is None:
        return {}
    try:
        return advice_for(model, dataset)
    except TrainerError:  # a model that cannot train this dataset: the form says so on submit
        return {}


def _pick(queryset, pk):
    """The row `pk` names, else the queryset's first (what a select shows selected)."""
    return queryset.filter(pk=pk).first() if str(pk or "").isdigit() else queryset.first()


@login_required
@require_GET
def advice(request):
    """The advisor's settings and reasons for the form's base model, dataset, task and worker class."""
    model = BaseModel.objects.filter(pk=request.GET.get("base_model") or 0, status=BaseModel.Status.READY).first()
    pk = request.GET.get("dataset", "")
    if model is None or not pk.isdigit():
        return JsonResponse({"error": "pick a base model that is ready and one of your datasets"}, status=400)
    dataset = _datasets(request).filter(pk=pk).first()
    if dataset is None:  # another team's, or gone: as every team object, not found
        return JsonResponse({"error": f"dataset {pk} is not one of your team's"}, status=404)
    try:
        advised = advice_for(model, dataset, task=request.GET.get("task") or None,
                             worker_class=request.GET.get("worker_class", ""),
                             separate_eval=bool(request.GET.get("eval_dataset")),
                             method=request.GET.get("method") or None)
    except TrainerError as error:
        return JsonResponse({"error": str(error)}, status=400)
    return JsonResponse(as_json(advised))


def fitting_model(models, datasets, dataset_pk=None) -> int | None:
    """The first ready model that can learn the form's first dataset's task (None: the form's first model)."""
    dataset = _pick(datasets, dataset_pk)
    if dataset is None or not dataset.task:
        return None
    return next((m.pk for m in models if not m.task_types or dataset.task in m.task_types), None)


@login_required
@require_GET
def estimate(request):
    """The live estimate for the form: parameter counts, sizes and peak memory (on a GPU, for the chosen quantize,
    dtype and gradient checkpointing), from the model's recorded shapes."""
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
    quantize, dtype = request.GET.get("quantize") or "none", request.GET.get("dtype") or "auto"
    if quantize not in QUANTIZE_CHOICES or dtype not in DTYPE_CHOICES:
        return JsonResponse({"error": f"quantize must be one of {', '.join(QUANTIZE_CHOICES)} and dtype one of "
                                      f"{', '.join(DTYPE_CHOICES)}"}, status=400)
    try:
        result = compute(model.info, targets=request.GET.get("targets") or "attention", task=task,
                         num_labels=dataset_label_count(request), quantize=quantize, dtype=dtype,
                         gradient_checkpointing=bool(request.GET.get("gradient_checkpointing")), **numbers)
    except TrainerError as error:
        return JsonResponse({"error": str(error)}, status=400)
    return JsonResponse(result)


def dataset_label_count(request) -> int | None:
    """How many labels the request's `dataset` (one of the team's) has, when it is a classification set."""
    pk = request.GET.get("dataset", "")
    dataset = team_queryset(request, Dataset).filter(pk=pk).first() if pk.isdigit() else None
    labels = (dataset.report or {}).get("labels") if dataset else None
    return len(labels) if labels else None


# What the job page shows of the rows a job points to (their large JSON, such as a model's layer shapes, is left out).
DETAIL_RELATED = ("base_model__name", "base_model__is_demo", "dataset__name", "eval_dataset__name",
                  "start_from__name")


@login_required
def job_detail(request, pk: int):
    job = get_team_object_or_404(request, Job.objects.select_related(
        "base_model", "dataset", "eval_dataset", "start_from").only(
        *(field.name for field in Job._meta.concrete_fields), *DETAIL_RELATED), pk=pk)
    snapshot = progress_snapshot(job)
    context = {"job": job, "snapshot": snapshot, "settings_rows": setting_rows(job),
               "log_text": "\n".join(snapshot["log"]),
               "position": snapshot["position"], "events": job.events.all(),
               "cancelling": job.state == states.RUNNING and (bool(job.cancel_requested_at) or _cancel_flag(job)),
               "silent": queue.silent_worker(job),
               "class_unserved": _class_unserved(job),
               # the chain of adapters, within the team (a job started from is always the same team's)
               "continued_by": team_queryset(request, Job).filter(start_from=job).only("name")}
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
    if outcome in ("cancelled", "stopping"):
        record(request, Action.JOB_CANCELLED, request.team, describe("job", job))
    if outcome == "cancelled":
        messages.success(request, "Job cancelled.")
    elif outcome == "stopping":
        messages.info(request, "Stopping at the next step; the last checkpoint is kept.")
    else:
        messages.warning(request, f"Nothing to cancel: {outcome}.")
    return redirect("jobs:detail", pk=job.pk)


@login_required
@require_POST
def job_delete(request, pk: int):
    job = get_team_object_or_404(request, Job, pk=pk)
    target = describe("job", job)  # before the row (and its pk) is gone
    try:
        delete_job(job, request.user.username)
    except JobStillStopping as stopping:
        messages.info(request, str(stopping))
        return redirect("jobs:detail", pk=pk)
    record(request, Action.JOB_DELETED, request.team, target)
    messages.success(request, f"Deleted job “{job.name}” and its files.")
    return redirect("jobs:list")


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
