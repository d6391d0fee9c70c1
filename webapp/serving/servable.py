"""Which models a team can call through /v1, and what a model name stands for.

Each succeeded causal-LM job of the team is `job-<id>` (its base with its adapter); each ready catalog base model
that can generate text is listed under its source name (the base alone). Another team's job is a 404, worded like
OpenAI's, so its existence is not revealed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from webapp.catalog.models import BaseModel
from webapp.jobs import states
from webapp.jobs.models import Job
from webapp.teams.scoping import team_queryset

JOB_NAME = re.compile(r"^job-(\d{1,18})$")
CAUSAL_LM = "causal-lm"


@dataclass(frozen=True)
class Servable:
    name: str
    base: str            # base model source, what the worker loads
    adapter: str | None  # storage folder of the adapter, None for a base model
    layout: str | None   # the job's data format (how a single prompt is laid out); None for a base model
    created: int         # unix time, OpenAI's `created`
    owned_by: str


def job_name(job) -> str:
    return f"job-{job.pk}"


def _jobs(request):
    return (team_queryset(request, Job).filter(state=states.SUCCEEDED, task=CAUSAL_LM)
            .select_related("base_model", "dataset").order_by("-pk"))


def _bases():
    return [model for model in BaseModel.objects.filter(status=BaseModel.Status.READY)
            if CAUSAL_LM in (model.task_types or []) or model.default_task == CAUSAL_LM]


def _from_job(job, team_name: str) -> Servable | None:
    from webapp.results.playground import job_spec

    spec = job_spec(job)
    if not spec["adapter"]:
        return None
    return Servable(job_name(job), spec["base"], spec["adapter"], spec["format"],
                    int(job.created_at.timestamp()), team_name)


def _from_base(model) -> Servable:
    return Servable(model.source, model.source, None, None, int(model.created_at.timestamp()), "loraworks")


def listing(request) -> list[Servable]:
    team = request.team.name
    return ([s for s in (_from_job(job, team) for job in _jobs(request)) if s is not None]
            + [_from_base(model) for model in _bases()])


def resolve(request, name) -> Servable | None:
    """The team's model called `name`, or None."""
    if not isinstance(name, str):
        return None
    match = JOB_NAME.match(name)
    if match:
        job = _jobs(request).filter(pk=int(match.group(1))).first()
        return _from_job(job, request.team.name) if job else None
    return next((_from_base(model) for model in _bases() if model.source == name), None)
