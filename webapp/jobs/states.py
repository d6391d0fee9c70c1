"""The one state machine of a job: its states (named in webapp.jobs.state_names, re-exported here), the allowed
moves, and `move`, the only way a state changes.

    validating ──> queued ──> running ──> succeeded
         │            │          │  ╰──> failed
         ╰────────────┴──────────┴─────> cancelled / failed

`validating`: the job waits for its dataset's validation. `running -> running` is the resume of a task Celery
handed out again after its worker died. Terminal states have no way out. `move` is a compare-and-set on the
row's state, so a cancel racing a worker's start cannot both win; every move records a JobEvent and is published
to the job's live channel once committed.
"""
from __future__ import annotations

from django.db import transaction
from django.db.models.functions import Coalesce
from django.db.models import Value
from django.utils import timezone

from webapp.jobs.state_names import (  # noqa: F401 - re-exported: callers read every name from here
    ACTIVE, CANCELLED, CHOICES, FAILED, QUEUED, RUNNING, SUCCEEDED, TASKS, TERMINAL, VALIDATING)

ALLOWED: dict[str, frozenset[str]] = {
    VALIDATING: frozenset({QUEUED, FAILED, CANCELLED}),
    QUEUED: frozenset({RUNNING, FAILED, CANCELLED}),
    RUNNING: frozenset({RUNNING, SUCCEEDED, FAILED, CANCELLED}),
    SUCCEEDED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
}


class TransitionRefused(Exception):
    """The job is in a state from which the requested move is not allowed (or it no longer exists)."""

    def __init__(self, job_id: int, current: str | None, target: str):
        where = f"is {current}" if current else "does not exist"
        super().__init__(f"job {job_id} {where}: it cannot become {target}")
        self.current, self.target = current, target


def can_move(current: str, target: str) -> bool:
    return target in ALLOWED.get(current, frozenset())


def resume_count(job) -> int:
    """How many times `job` was resumed (its `running -> running` moves: a lost worker's or a lost process's)."""
    return job.events.filter(from_state=RUNNING, to_state=RUNNING).count()


def initial_state(waiting_for_dataset: bool) -> str:
    return VALIDATING if waiting_for_dataset else QUEUED


def record_creation(job, reason: str) -> None:
    """Stamp a new job's queued_at (if it starts queued), record its first event, start its live keys afresh."""
    from webapp.jobs import live
    from webapp.jobs.models import Job, JobEvent

    live.reset(job.pk)

    if job.state == QUEUED:
        Job.objects.filter(pk=job.pk).update(queued_at=job.created_at)
    JobEvent.objects.create(job_id=job.pk, from_state="", to_state=job.state, reason=reason)


def move(job, target: str, *, reason: str = "", **fields):
    """Move `job` to `target`, setting `fields` in the same UPDATE; stamps queued_at/started_at/finished_at.

    Raises TransitionRefused when the row's current state does not allow it. Updates `job` in memory.
    """
    from webapp.jobs.models import Job, JobEvent

    now = timezone.now()
    updates = {"state": target, **fields}
    if target == QUEUED:
        updates.setdefault("queued_at", now)
    elif target == RUNNING:
        updates["started_at"] = Coalesce("started_at", Value(now))  # a resumed run keeps its first start
        updates.setdefault("heartbeat_at", now)
    elif target in TERMINAL:
        updates["finished_at"] = now
    while True:
        current = Job.objects.filter(pk=job.pk).values_list("state", flat=True).first()
        if current is None or not can_move(current, target):
            raise TransitionRefused(job.pk, current, target)
        with transaction.atomic():
            if Job.objects.filter(pk=job.pk, state=current).update(**updates):
                JobEvent.objects.create(job_id=job.pk, from_state=current, to_state=target, reason=reason)
                break
        # Someone else moved it between our read and our write: decide again from its new state.
    job.refresh_from_db()
    transaction.on_commit(lambda: _announce(job.pk, current, target, reason))
    return job


def _announce(job_id: int, previous: str, target: str, reason: str) -> None:
    from webapp.jobs import live

    live.publish_state(job_id, previous, target, reason)
