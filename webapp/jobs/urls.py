"""URL routes of the jobs pages."""
from django.urls import path

from webapp.jobs import views

app_name = "jobs"
urlpatterns = [
    path("", views.job_list, name="list"),
    path("new/", views.job_create, name="create"),
    path("estimate/", views.estimate, name="estimate"),
    path("advice/", views.advice, name="advice"),
    path("<int:pk>/", views.job_detail, name="detail"),
    path("<int:pk>/cancel/", views.job_cancel, name="cancel"),
    path("<int:pk>/delete/", views.job_delete, name="delete"),
    path("<int:pk>/progress/", views.job_progress, name="progress"),
    path("<int:pk>/events/", views.job_stream, name="events"),
]
