"""App config for serving (the OpenAI-compatible /v1 routes)."""
from django.apps import AppConfig


class ServingConfig(AppConfig):
    name = "webapp.serving"
    label = "serving"
