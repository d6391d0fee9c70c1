"""A team's quotas (set on the team in the admin), checked when a job or a dataset is submitted.

Two kinds, answered differently by the API: running and queued jobs are rate-like (429: it passes once some of
the team's jobs have finished or started), GPU-hours a month and storage are hard quotas (409: it passes only once
the month turns, files are deleted or an admin raises the quota). Every refusal names the limit and the use.
"""
from __future__ import annotations

from calendar import month_name

from django.template.defaultfilters import filesizeformat

from webapp.jobs import states
from webapp.teams.storage_usage import team_storage
from webapp.teams.usage import month_gpu_seconds, month_of

RATE_LIKE, HARD = 429, 409


class QuotaExceeded(Exception):
    """The team is at one of its limits; `status` is 429 (running/queued jobs) or 409 (GPU-hours, storage)."""

    def __init__(self, limit: str, message: str, status: int):
        super().__init__(message)
        self.limit, self.message, self.status = limit, message, status


def check_new_job(team) -> None:
    """Raise QuotaExceeded when `team` may not submit another job now."""
    from webapp.jobs.models import Job

    jobs = Job.objects.filter(team=team)
    if team.max_running_jobs is not None:
        running = jobs.filter(state=states.RUNNING).count()
        if running >= team.max_running_jobs:
            raise QuotaExceeded("running_jobs", f"The team {team.name} has {running} running job{_s(running)}, its limit "
                                f"of {team.max_running_jobs} concurrent running job{_s(team.max_running_jobs)}: "
                                "submit again once one has finished (or cancel one).", RATE_LIKE)
    if team.max_queued_jobs is not None:
        waiting = jobs.filter(state__in=(states.QUEUED, states.VALIDATING)).count()
        if waiting >= team.max_queued_jobs:
            raise QuotaExceeded("queued_jobs", f"The team {team.name} has {waiting} queued job{_s(waiting)}, its limit "
                                f"of {team.max_queued_jobs} queued job{_s(team.max_queued_jobs)}: submit again once "
                                "one has started (or cancel one).", RATE_LIKE)
    if team.gpu_hours_per_month is not None:
        used = month_gpu_seconds(team) / 3600
        if used >= team.gpu_hours_per_month:
            month = month_of()
            raise QuotaExceeded("gpu_hours", f"The team {team.name} has used {used:.2f} of its {team.gpu_hours_per_month:g} "
                                f"GPU-hours for {month_name[month.month]} {month.year}: the quota renews on the 1st "
                                "of next month, or an admin can raise it.", HARD)
    check_storage(team)


def check_storage(team, adding_bytes: int = 0) -> None:
    """Raise QuotaExceeded when `team`'s datasets and job files, plus `adding_bytes`, pass its storage quota."""
    if team.max_storage_bytes is None:
        return
    used = team_storage(team)["total_bytes"]
    if used + adding_bytes > team.max_storage_bytes or (not adding_bytes and used >= team.max_storage_bytes):
        adding = f" and this upload is {size(adding_bytes)}" if adding_bytes else ""
        raise QuotaExceeded("storage", f"The team {team.name} uses {size(used)} ({used} bytes) of its storage "
                            f"quota of {size(team.max_storage_bytes)} ({team.max_storage_bytes} bytes)"
                            f"{adding}: delete datasets or jobs you no longer need, or ask an admin to raise it.",
                            HARD)


def size(n: int) -> str:
    """filesizeformat with a plain space, so messages read (and match) the same in pages, JSON and terminals."""
    return filesizeformat(n).replace("\xa0", " ")


def _s(n: int) -> str:
    return "" if n == 1 else "s"


def quota_rows(team, storage_bytes: int) -> list[dict]:
    """The team page's quota table: each limit with its use now ({"name", "used", "limit", "unit"})."""
    from webapp.jobs.models import Job

    jobs = Job.objects.filter(team=team)
    return [
        {"name": "Running jobs", "used": jobs.filter(state=states.RUNNING).count(), "limit": team.max_running_jobs},
        {"name": "Queued jobs", "used": jobs.filter(state__in=(states.QUEUED, states.VALIDATING)).count(),
         "limit": team.max_queued_jobs},
        {"name": "GPU-hours this month", "used": round(month_gpu_seconds(team) / 3600, 2),
         "limit": team.gpu_hours_per_month},
        {"name": "Storage", "used": size(storage_bytes),
         "limit": size(team.max_storage_bytes) if team.max_storage_bytes is not None else None},
    ]
