"""URL routes of the serving app, under /v1/ as OpenAI's clients expect them."""
from django.urls import path, re_path

from webapp.serving import views
from webapp.serving.auth import unknown_route

app_name = "serving"
urlpatterns = [
    path("models", views.models, name="models"),
    path("chat/completions", views.chat_completions, name="chat_completions"),
    path("completions", views.completions, name="completions"),
    re_path(r"", unknown_route, name="unknown"),  # last: anything else under /v1/ is an OpenAI-shaped 404
]
