"""Creating jobs, shared by the job pages and the JSON API: which datasets a team may train on, and the one
way a job row comes to exist (quotas checked, initial state, first event, task sent once committed)."""
from django.db import transaction
from django.db.models import F

from webapp.datasets.models import Dataset
from webapp.jobs import priority, queue, states
from webapp.jobs.models import Job
from webapp.teams import quotas
from webapp.teams.models import Team
from webapp.teams.scoping import team_queryset


def selectable_datasets(request):
    """The request team's datasets a job can use (validating ones too: the job waits for them)."""
    return team_queryset(request, Dataset).exclude(status="invalid")


def continuable_jobs(request):
    """The request team's jobs a new job may start from (the form keeps the succeeded ones)."""
    return team_queryset(request, Job).select_related("base_model")


def create_job(team, user, form) -> Job:
    """Create the job a valid JobForm describes: `validating` while a dataset is, else `queued`. QuotaExceeded when
    the team is at one of its limits (checked with the team's row locked, so two submits cannot both take the last
    place)."""
    data = form.cleaned_data
    waiting = any(d is not None and d.status == "validating" for d in (data["dataset"], data.get("eval_dataset")))
    with transaction.atomic():
        # Lock the team with a write that changes nothing: a row lock on PostgreSQL, and on SQLite the write lock
        # taken first (a transaction that read first could not upgrade while a worker writes: "database is locked").
        Team.objects.filter(pk=team.pk).update(slug=F("slug"))
        quotas.check_new_job(Team.objects.get(pk=team.pk))
        job = Job.objects.create(
            team=team, created_by=user, name=data["name"], base_model=data["base_model"], dataset=data["dataset"],
            eval_dataset=data.get("eval_dataset"), task=data["task"], start_from=data.get("start_from"), worker_class=data.get("worker_class", ""),
            priority=data.get("priority") or priority.NORMAL, settings=form.settings_dict(),
            state=states.initial_state(waiting_for_dataset=waiting))
        states.record_creation(job, f"created by {user}")
        queue.submit(job)
    job.refresh_from_db()
    return job
