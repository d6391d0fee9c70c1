"""App config for the audit log; connects the sign-in signals (webapp.audit.signins) once the app is ready."""
from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "webapp.audit"
    label = "audit"

    def ready(self):
        from webapp.audit import signins  # noqa: F401 - connects the signal receivers
