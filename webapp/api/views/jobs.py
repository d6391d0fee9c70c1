"""/api/jobs: create (through the job page's own form and `services.create_job`), list, detail, delete, events, cancel
(through the jobs app's queue.cancel), downloads (the results app's own download view), metrics, playground.

A JSON body maps onto the page form's fields one to one, so the API accepts and refuses exactly what the page
does, with the engine's own range checks (trainer.config) and messages. Settings left out take the engine's
defaults, or with `"defaults": "advised"` the settings advisor's (webapp.jobs.advice), as the page's form does.
"""
from django.http import HttpResponse, JsonResponse

from trainer.advice import values
from trainer.config import METHODS, TARGET_PRESETS, TrainConfig
from trainer.errors import TrainerError
from webapp.api.decorators import api_view, read_json
from webapp.api.errors import ApiError
from webapp.api.pagination import int_param, page_response
from webapp.api.serialize import event_json, job_json
from webapp.audit.record import Action, describe, record
from webapp.catalog.models import BaseModel
from webapp.datasets.models import Dataset
from webapp.jobs import queue, states
from webapp.jobs.advice import advice_for
from webapp.jobs.deletion import JobStillStopping, delete_job
from webapp.jobs.forms import CUSTOM, LORA_FIELDS, TRAINING_FIELDS, JobForm
from webapp.jobs.models import Job, JobEvent
from webapp.jobs.services import continuable_jobs, create_job, selectable_datasets
from webapp.teams.quotas import QuotaExceeded
from webapp.teams.scoping import get_team_object_or_404, team_queryset

DEFAULTS = TrainConfig(model="", data="", out="")
TOP_FIELDS = {"name", "base_model", "dataset", "eval_dataset", "start_from", "task", "worker_class", "priority",
              "lora", "training", "defaults"}
DEFAULTS_CHOICES = ("engine", "advised")


@api_view("GET", "POST", rate={"POST": "jobs"})
def jobs(request):
    if request.method == "POST":
        return create(request)
    queryset = team_queryset(request, Job).select_related("base_model")
    return page_response(request, queryset, job_json)


def create(request):
    body = read_json(request)
    form = JobForm(form_data(request, body), datasets=selectable_datasets(request),
                   jobs=continuable_jobs(request))
    if not form.is_valid():
        field, errors = next(iter(form.errors.items()))
        field = api_field(field)
        raise ApiError(400, f"{field + ': ' if field else ''}{' '.join(errors)}", field=field)
    try:
        job = create_job(request.team, request.user, form)
    except QuotaExceeded as exceeded:
        raise ApiError.over_quota(exceeded) from None
    record(request, Action.JOB_CREATED, request.team, describe("job", job))
    return JsonResponse({"id": job.pk, "status": job.state}, status=201)


def form_data(request, body: dict) -> dict:
    """The page form's POST data for an API body; references the team cannot see are 404s naming the field."""
    unknown = sorted(set(body) - TOP_FIELDS)
    if unknown:
        raise ApiError(400, f"unknown field {unknown[0]}; the fields are {', '.join(sorted(TOP_FIELDS))}",
                       field=unknown[0])
    lora, training = section(body, "lora", LORA_FIELDS + ("targets",)), section(body, "training", TRAINING_FIELDS)
    data = {"name": scalar(body, "name", ""), "task": scalar(body, "task", ""),
            "worker_class": scalar(body, "worker_class", ""), "priority": scalar(body, "priority", "")}
    data["base_model"] = base_model_id(body.get("base_model"))
    data["dataset"] = dataset_id(request, body.get("dataset"), "dataset")
    if body.get("eval_dataset") is not None:
        data["eval_dataset"] = dataset_id(request, body["eval_dataset"], "eval_dataset")
    if body.get("start_from") is not None:
        data["start_from"] = start_from_id(request, body["start_from"])
    defaults = {**{name: getattr(DEFAULTS.lora, name) for name in LORA_FIELDS + ("targets",)},
                **{name: getattr(DEFAULTS, name) for name in TRAINING_FIELDS}}
    if scalar(body, "defaults", "engine") == "advised":
        defaults.update(advised(request, data, training))
    elif body.get("defaults") not in (None, *DEFAULTS_CHOICES):
        raise ApiError(400, f"defaults must be one of {', '.join(DEFAULTS_CHOICES)}", field="defaults")
    for name, default in defaults.items():
        value = {**lora, **training}.get(name, default)
        if value is not None:
            data[name] = value
    if data["targets"] not in TARGET_PRESETS:
        data["targets"], data["custom_targets"] = CUSTOM, data["targets"]
    return data


def advised(request, data: dict, training: dict) -> dict:
    """The settings advisor's values (webapp.jobs.advice) for the body's model, dataset, task, worker class and
    method."""
    model = BaseModel.objects.get(pk=data["base_model"])
    if not model.is_ready:
        return {}  # the form refuses the model and says why
    dataset = team_queryset(request, Dataset).get(pk=data["dataset"])
    eval_fraction = training.get("eval_fraction", DEFAULTS.eval_fraction)
    if not isinstance(eval_fraction, (int, float)) or not 0 <= eval_fraction < 1:
        eval_fraction = DEFAULTS.eval_fraction  # the form refuses it, naming the field
    try:
        return values(advice_for(model, dataset, task=data["task"] or None, worker_class=data["worker_class"],
                                 eval_fraction=eval_fraction, separate_eval="eval_dataset" in data,
                                 method=training.get("method") if training.get("method") in METHODS else None))
    except TrainerError:  # a model that cannot train this dataset: the form refuses it and says why
        return {}


def section(body: dict, name: str, allowed: tuple) -> dict:
    value = body.get(name) or {}
    if not isinstance(value, dict):
        raise ApiError(400, f"{name} must be an object", field=name)
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise ApiError(400, f"unknown setting {name}.{unknown[0]}; {name} takes {', '.join(allowed)}",
                       field=f"{name}.{unknown[0]}")
    for key, item in value.items():
        if isinstance(item, (dict, list)):
            raise ApiError(400, f"{name}.{key} must be a single value", field=f"{name}.{key}")
    return value


def scalar(body: dict, name: str, default):
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ApiError(400, f"{name} must be a string", field=name)
    return value


def base_model_id(reference) -> int:
    """A catalog id or a source name ("demo/tiny-lm")."""
    if reference is None:
        raise ApiError(400, "base_model is required: a catalog id or source name", field="base_model")
    if isinstance(reference, bool) or not isinstance(reference, (int, str)):
        raise ApiError(400, "base_model must be a catalog id or a source name", field="base_model")
    lookup = {"pk": reference} if isinstance(reference, int) else {"source": reference}
    model = BaseModel.objects.filter(**lookup).first()
    if model is None:
        raise ApiError(404, f"no base model {reference!r} in the catalog", field="base_model")
    return model.pk


def dataset_id(request, reference, field: str) -> int:
    if reference is None:
        raise ApiError(400, f"{field} is required: the id of one of your team's datasets", field=field)
    if isinstance(reference, bool) or not isinstance(reference, int):
        raise ApiError(400, f"{field} must be a dataset id", field=field)
    dataset = team_queryset(request, Dataset).filter(pk=reference).first()
    if dataset is None:
        raise ApiError(404, f"no dataset {reference} in your team", field=field)
    if dataset.status == Dataset.Status.INVALID:
        raise ApiError(409, f"dataset {reference} did not pass validation: {dataset.error or 'see its report'}",
                       field=field)
    return dataset.pk


def start_from_id(request, reference) -> int:
    """A succeeded job of the team whose adapter the new job continues (same base and task: the form checks)."""
    if isinstance(reference, bool) or not isinstance(reference, int):
        raise ApiError(400, "start_from must be a job id", field="start_from")
    parent = team_queryset(request, Job).filter(pk=reference).first()
    if parent is None:
        raise ApiError(404, f"no job {reference} in your team", field="start_from")
    if parent.state != states.SUCCEEDED:
        raise ApiError(400, f"start_from: job {reference} is {parent.state}; only a succeeded job's adapter can be "
                            "continued", field="start_from")
    return parent.pk


def api_field(form_field: str) -> str | None:
    """The API's name for a form field: lora.rank, training.lr…, None for errors about the whole form."""
    if form_field == "__all__":
        return None
    if form_field in LORA_FIELDS or form_field in ("targets", "custom_targets"):
        return f"lora.{'targets' if form_field == 'custom_targets' else form_field}"
    if form_field in TRAINING_FIELDS:
        return f"training.{form_field}"
    return form_field


def team_job(request, job_id: int) -> Job:
    return get_team_object_or_404(request, Job.objects.select_related("base_model", "dataset"), pk=job_id)


@api_view("GET", "DELETE")
def job(request, job_id: int):
    found = team_job(request, job_id)
    if request.method == "DELETE":
        target = describe("job", found)  # before the row (and its pk) is gone
        try:
            delete_job(found, request.user.username)
        except JobStillStopping as stopping:
            raise ApiError(409, str(stopping)) from None
        record(request, Action.JOB_DELETED, request.team, target)
        return HttpResponse(status=204)
    # The position costs a query: given on one job's detail, not in the list.
    return JsonResponse({**job_json(found), "queue_position": queue.queue_position(found)})


@api_view("GET")
def events(request, job_id: int):
    found = team_job(request, job_id)
    after = int_param(request, "after", 0, 0, 2**62)
    limit = int_param(request, "limit", 100, 1, 500)
    items = list(JobEvent.timeline.filter(job=found, pk__gt=after).order_by("pk")[:limit])
    from webapp.jobs.stream import progress_snapshot

    return JsonResponse({"items": [event_json(e) for e in items], "next_after": items[-1].pk if items else after,
                         "status": found.state, "log": progress_snapshot(found)["log"]})


@api_view("POST")
def cancel(request, job_id: int):
    found = team_job(request, job_id)
    outcome = queue.cancel(found, request.user.username)
    if outcome not in ("cancelled", "stopping"):
        raise ApiError(409, f"nothing to cancel: {outcome}")
    record(request, Action.JOB_CANCELLED, request.team, describe("job", found))
    found.refresh_from_db()
    return JsonResponse({"id": found.pk, "status": found.state, "outcome": outcome})


def download(kind: str):
    @api_view("GET")
    def view(request, job_id: int):
        from webapp.results.downloads import download as page_download

        found = team_job(request, job_id)
        if found.state != states.SUCCEEDED and not (kind == "adapter" and found.has_adapter):
            raise ApiError(409, f"job {found.pk} is {found.state}: downloads exist once it has succeeded "
                                "(a cancelled job's adapter, when it kept a checkpoint)")
        if kind == "merged" and not (found.artifacts or {}).get("merged"):
            raise ApiError(404, f"job {found.pk} has no merged model: create jobs with training.merge = true")
        return page_download(request, found.pk, kind)

    view.__name__ = view.__qualname__ = f"{kind}_download"
    return view


adapter = download("adapter")
merged = download("merged")


@api_view("GET")
def metrics(request, job_id: int):
    found = team_job(request, job_id)
    return JsonResponse({"metrics": found.metrics or {}, "history": found.history or []})


@api_view("POST", rate={"POST": "playground"})
def playground(request, job_id: int):
    from webapp.results.forms import PlaygroundForm
    from webapp.results import playground as protocol
    from webapp.results.views import finished_jobs

    found = team_job(request, job_id)
    body = read_json(request)
    if found.state != states.SUCCEEDED:
        raise ApiError(409, f"job {found.pk} is {found.state}: the playground needs a job that has succeeded")
    unknown = sorted(set(body) - {"prompt", "text", "temperature", "top_p", "max_new_tokens", "seed"})
    if unknown:
        raise ApiError(400, f"unknown field {unknown[0]}", field=unknown[0])
    source = "text" if "text" in body and "prompt" not in body else "prompt"
    form = PlaygroundForm(finished_jobs(request), {"job": found.pk, "prompt": scalar(body, source, ""), **{
        name: body.get(name, PlaygroundForm.base_fields[name].initial)
        for name in ("temperature", "top_p", "max_new_tokens", "seed")}})
    if not form.is_valid():
        field, errors = next(iter(form.errors.items()))
        field = source if field == "prompt" else field
        raise ApiError(400, f"{field}: {' '.join(errors)}", field=field)
    request_id = protocol.new_request_id()
    sampling = form.sampling()
    protocol.start(request_id, found, form.cleaned_data["prompt"], sampling)
    try:
        answers = protocol.collect(protocol.redis_client(), request_id, protocol.limits()["stream_timeout_s"])
    except protocol.PlaygroundFailed as failed:
        raise ApiError(409, str(failed)) from None
    return JsonResponse({side: answer["text"] if answer["probs"] is None else classification(answer["probs"])
                         for side, answer in answers.items()})


def classification(probs: dict) -> dict:
    return {"label": max(probs, key=probs.get) if probs else None, "scores": probs}
