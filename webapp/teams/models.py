"""Team (with its quotas, set in the admin), Membership, MonthlyUsage (GPU-seconds a team used in a month) and
TeamOwned: the abstract base of every model a team owns."""
from django.conf import settings
from django.db import models


class Team(models.Model):
    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=100, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="Membership", related_name="teams")
    # Quotas (webapp.teams.quotas), checked when a job or a dataset is submitted; empty means no limit.
    max_running_jobs = models.PositiveIntegerField(
        null=True, blank=True, help_text="Jobs of this team running at once; a new job is refused at the limit.")
    max_queued_jobs = models.PositiveIntegerField(
        null=True, blank=True, help_text="Jobs of this team waiting to start (queued or validating) at once.")
    gpu_hours_per_month = models.FloatField(
        null=True, blank=True, help_text="GPU-hours (worker hours × GPUs) a month; no new job once they are used.")
    max_storage_bytes = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Bytes of datasets and job files (1 GB = 1000000000); uploads and new "
                                         "jobs are refused at the limit.")

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        MEMBER = "member", "Member"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    joined_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "user"], name="one_membership_per_team")]
        ordering = ["team__name"]

    def __str__(self):
        return f"{self.user} in {self.team} ({self.role})"


class TeamOwned(models.Model):
    """Base for datasets, jobs, tokens…: owned by a team, created by one of its members."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        abstract = True


class MonthlyUsage(models.Model):
    """GPU-seconds (worker seconds × the job's GPUs) a team's jobs used in one calendar month (UTC). Kept apart
    from the jobs so that deleting a job does not give its hours back."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="monthly_usage")
    month = models.DateField(help_text="The first day of the month.")
    gpu_seconds = models.FloatField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "month"], name="one_usage_row_per_team_month")]
        ordering = ["-month"]

    def __str__(self):
        return f"{self.team} {self.month:%Y-%m}: {self.gpu_seconds / 3600:.2f} GPU-hours"
