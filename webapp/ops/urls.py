"""URL routes of the operations app (full paths: mounted at the root, namespace "ops")."""
from django.urls import path

from webapp.ops import views

app_name = "ops"
urlpatterns = [
    path("ops/", views.status, name="status"),
    path("healthz", views.healthz, name="healthz"),
]
