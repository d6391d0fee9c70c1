"""AuditEvent: one thing someone did, with who (the user, and the name typed for a failed sign-in), when, from
which address, through which door (the pages or the API) and to what. Rows are written, never edited."""
from django.conf import settings
from django.db import models


class AuditEvent(models.Model):
    class Action(models.TextChoices):
        SIGN_IN = "sign_in", "Signed in"
        SIGN_IN_FAILED = "sign_in_failed", "Failed sign-in"
        TOKEN_CREATED = "token_created", "API token created"
        TOKEN_REVOKED = "token_revoked", "API token revoked"
        JOB_CREATED = "job_created", "Job created"
        JOB_CANCELLED = "job_cancelled", "Job cancelled"
        JOB_DELETED = "job_deleted", "Job deleted"
        DATASET_UPLOADED = "dataset_uploaded", "Dataset uploaded"
        DATASET_DELETED = "dataset_deleted", "Dataset deleted"
        DOWNLOAD = "download", "Download"

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    # Empty for a failed sign-in under a name no team has.
    team = models.ForeignKey("teams.Team", on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                             related_name="+")
    username = models.CharField(max_length=150, help_text="As typed or as it was then: kept if the user goes.")
    action = models.CharField(max_length=20, choices=Action.choices, db_index=True)
    target = models.CharField(max_length=300, blank=True, help_text="What it was done to, such as job 12 “name”.")
    ip = models.GenericIPAddressField(null=True, blank=True)
    via = models.CharField(max_length=10, blank=True, help_text="web (the pages) or api (a token).")

    class Meta:
        ordering = ["-at", "-pk"]
        indexes = [models.Index(fields=["team", "-at"])]

    def __str__(self):
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.username} {self.get_action_display()} {self.target}".strip()
