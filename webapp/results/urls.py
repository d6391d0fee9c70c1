"""URL routes of the results, downloads and playground pages (full paths: this app is mounted at the root)."""
from django.urls import path

from webapp.results import downloads, playground_views, views

app_name = "results"
urlpatterns = [
    path("jobs/<int:job_id>/results/", views.job_results, name="job"),
    path("jobs/compare/", views.compare, name="compare"),
    path("jobs/<int:job_id>/download/<slug:kind>/", downloads.download, name="download"),
    path("playground/", playground_views.playground, name="playground"),
    path("playground/run/", playground_views.playground_run, name="playground_run"),
    path("playground/stream/<slug:request_id>/", playground_views.playground_stream, name="playground_stream"),
]
