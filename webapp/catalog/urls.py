"""URL routes of the catalog pages."""
from django.urls import path

from webapp.catalog import views

app_name = "models"
urlpatterns = [
    path("", views.model_list, name="list"),
    path("<int:pk>/", views.model_detail, name="detail"),
]
