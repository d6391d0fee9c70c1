"""ApiToken: a named secret that lets scripts act for one person in one team through the JSON API.

Only the SHA-256 of the secret is stored; the secret itself is shown once, when the token is created. A short
prefix of it is kept in clear so people can tell their tokens apart on the settings page.
"""
from django.conf import settings
from django.db import models

from webapp.teams.models import TeamOwned


class ApiToken(TeamOwned):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    token_hash = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=16, help_text="The first characters of the secret, for display.")
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
