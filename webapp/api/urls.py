"""URL routes of the api app: paths without trailing slashes, as the OpenAPI schema lists them."""
from django.urls import path, re_path

from webapp.api.decorators import unknown_route
from webapp.api.views import catalog, datasets, jobs, meta

app_name = "api"
urlpatterns = [
    path("me", meta.me, name="me"),
    path("models", catalog.models_list, name="models"),
    path("models/<int:model_id>", catalog.model_detail, name="model"),
    path("datasets", datasets.datasets, name="datasets"),
    path("datasets/<int:dataset_id>", datasets.dataset, name="dataset"),
    path("datasets/<int:dataset_id>/confirm-rows", datasets.confirm_rows, name="dataset_confirm_rows"),
    path("jobs", jobs.jobs, name="jobs"),
    path("jobs/<int:job_id>", jobs.job, name="job"),
    path("jobs/<int:job_id>/events", jobs.events, name="job_events"),
    path("jobs/<int:job_id>/cancel", jobs.cancel, name="job_cancel"),
    path("jobs/<int:job_id>/adapter", jobs.adapter, name="job_adapter"),
    path("jobs/<int:job_id>/merged", jobs.merged, name="job_merged"),
    path("jobs/<int:job_id>/metrics", jobs.metrics, name="job_metrics"),
    path("jobs/<int:job_id>/playground", jobs.playground, name="job_playground"),
    path("schema", meta.openapi_schema, name="schema"),
    path("docs", meta.reference, name="reference"),
    re_path(r"", unknown_route, name="unknown"),  # last: anything else under /api/ is a JSON 404
]
