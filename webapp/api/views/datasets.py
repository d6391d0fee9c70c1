"""/api/datasets: upload (multipart, streamed and size-limited like the page), list, detail, delete, and confirming
training on the good rows of a file where many rows have problems.

Uploads go through the datasets page's own form, upload handler and `services.create_dataset`, so both paths accept and
refuse the same files; validation then runs on a worker and the client polls the detail until it settles.
"""
import json

from django.http import HttpResponse, JsonResponse

from webapp.api.decorators import api_view
from webapp.api.errors import ApiError
from webapp.api.pagination import page_response
from webapp.api.serialize import dataset_json
from webapp.audit.record import Action, describe, record
from webapp.datasets.forms import UploadForm, mapping_problem
from webapp.datasets.models import Dataset
from webapp.datasets.services import DatasetInUse, create_dataset, delete_dataset
from webapp.datasets.uploads import SizeLimitedUploadHandler, declared_too_large, label, too_large_message
from webapp.teams.quotas import QuotaExceeded
from webapp.teams.scoping import get_team_object_or_404, team_queryset

# The multipart parts an upload takes: the page form's fields and the column mapping (the schema lists the same).
UPLOAD_FIELDS = (*UploadForm.base_fields, "column_mapping")


@api_view("GET", "POST")
def datasets(request):
    if request.method == "POST":
        return upload(request)
    return page_response(request, team_queryset(request, Dataset), dataset_json)


def upload(request):
    refusal = declared_too_large(request)
    if refusal:
        raise ApiError(413, refusal, field="file")
    # Must be set before anything reads the body, so an oversized file is stopped while it streams in.
    handler = SizeLimitedUploadHandler(request)
    request.upload_handlers = [handler]
    if not request.content_type.startswith("multipart/form-data"):
        raise ApiError(400, "send the dataset as multipart/form-data with a `file` part", field="file")
    files, post = request.FILES, request.POST
    try:
        if handler.rejected is not None:
            raise ApiError(413, too_large_message(label(handler.rejected)), field="file")
        unknown = sorted((set(post) | set(files)) - set(UPLOAD_FIELDS))
        if unknown:
            raise ApiError(400, f"unknown part {unknown[0]}; the parts are {', '.join(UPLOAD_FIELDS)}",
                           field=unknown[0])
        mapping = column_mapping(post.get("column_mapping"))
        form = UploadForm(post, files)
        if not form.is_valid():
            field, errors = next(iter(form.errors.items()))
            raise ApiError(400, f"{field}: {' '.join(errors)}", field=field)
    except ApiError:
        for uploaded in files.values():
            uploaded.close()  # a temporary upload file is removed when closed
        raise
    try:
        dataset = create_dataset(request.team, request.user, form.cleaned_data, column_mapping=mapping)
    except QuotaExceeded as exceeded:
        raise ApiError.over_quota(exceeded) from None
    record(request, Action.DATASET_UPLOADED, request.team, describe("dataset", dataset))
    return JsonResponse({"id": dataset.pk, "status": dataset.status}, status=201)


def column_mapping(raw: str | None) -> dict:
    """Parse the optional `column_mapping` part: a JSON object {canonical field: column in the file}."""
    if not raw:
        return {}
    try:
        mapping = json.loads(raw)
    except ValueError:
        mapping = None
    if not isinstance(mapping, dict) or not all(isinstance(v, str) and v for v in mapping.values()):
        raise ApiError(400, 'column_mapping must be a JSON object like {"prompt": "question"}', field="column_mapping")
    problem = mapping_problem(mapping)
    if problem:
        raise ApiError(400, f"column_mapping.{problem[0]}: {problem[1]}", field="column_mapping")
    return mapping


@api_view("GET", "DELETE")
def dataset(request, dataset_id: int):
    obj = get_team_object_or_404(request, Dataset, pk=dataset_id)
    if request.method == "DELETE":
        target = describe("dataset", obj)  # before the row (and its pk) is gone
        try:
            delete_dataset(obj)
        except DatasetInUse as refused:
            raise ApiError(409, str(refused)) from None
        record(request, Action.DATASET_DELETED, request.team, target)
        return HttpResponse(status=204)
    return JsonResponse(dataset_json(obj))


@api_view("POST")
def confirm_rows(request, dataset_id: int):
    obj = get_team_object_or_404(request, Dataset, pk=dataset_id)
    if obj.status != Dataset.Status.READY:
        raise ApiError(409, f"dataset {dataset_id} is {obj.status}: only a ready dataset's good rows can be confirmed")
    obj.confirm_good_rows()
    return JsonResponse(dataset_json(obj))
