"""URL routes of the datasets pages."""
from django.urls import path

from webapp.datasets import views

app_name = "datasets"
urlpatterns = [
    path("", views.dataset_list, name="list"),
    path("upload/", views.upload, name="upload"),
    path("samples/<slug:name>/", views.use_sample, name="use_sample"),
    path("<int:pk>/", views.detail, name="detail"),
    path("<int:pk>/status/", views.status, name="status"),
    path("<int:pk>/analysis/", views.analyse, name="analyse"),
    path("<int:pk>/columns/", views.column_mapping, name="column_mapping"),
    path("<int:pk>/confirm-rows/", views.confirm_rows, name="confirm_rows"),
    path("<int:pk>/delete/", views.delete, name="delete"),
]
