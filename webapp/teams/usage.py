"""GPU accounting: a running job's worker adds the seconds it worked × the job's GPUs to the job and to its team's
row for the month (MonthlyUsage, UTC months); the quota check and the team page read the month's total."""
from __future__ import annotations

from datetime import date, datetime, timezone as tz

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from webapp.teams.models import MonthlyUsage


def month_of(at: datetime | None = None) -> date:
    at = at or timezone.now()
    return at.astimezone(tz.utc).date().replace(day=1)


def add_gpu_seconds(job_id: int, team_id: int, seconds: float, at: datetime | None = None) -> None:
    """Add `seconds` (worker seconds × GPUs) to job `job_id` and to its team's month."""
    from webapp.jobs.models import Job

    if seconds <= 0:
        return
    month = month_of(at)
    with transaction.atomic():
        Job.objects.filter(pk=job_id).update(gpu_seconds=F("gpu_seconds") + seconds)
        if not MonthlyUsage.objects.filter(team_id=team_id, month=month).update(
                gpu_seconds=F("gpu_seconds") + seconds):
            try:
                with transaction.atomic():
                    MonthlyUsage.objects.create(team_id=team_id, month=month, gpu_seconds=seconds)
            except IntegrityError:  # another worker made the month's row first
                MonthlyUsage.objects.filter(team_id=team_id, month=month).update(
                    gpu_seconds=F("gpu_seconds") + seconds)


def month_gpu_seconds(team, at: datetime | None = None) -> float:
    row = MonthlyUsage.objects.filter(team=team, month=month_of(at)).values_list("gpu_seconds", flat=True).first()
    return row or 0.0
