"""Deleting a job: a waiting job is cancelled first, a running one is asked to stop first; then the row goes (its
history cascades) and, once that has committed, its artifacts under `jobs/<id>/` leave storage.

A running job whose worker is alive is not deleted at once: its worker still writes to the row and to storage
until its next step, so the delete is refused with a message saying it is stopping (the job page then offers the
delete again once it shows cancelled).
"""
from __future__ import annotations

from django.db import transaction

from webapp.jobs import live, queue, states, storage


class JobStillStopping(Exception):
    """The job was running: it has been asked to stop and can be deleted once it has."""


def delete_job(job, who: str) -> None:
    """Cancel `job` if it is active, delete its row, then its stored files. JobStillStopping while it stops."""
    if job.state in states.ACTIVE:
        queue.cancel(job, who)
        job.refresh_from_db()
        if job.state == states.RUNNING:
            raise JobStillStopping(f"“{job.name}” was running: it stops at its next step (its checkpoint is "
                                   "kept until then). Delete it once it shows cancelled.")
    pk = job.pk
    with transaction.atomic():
        job.delete()
        transaction.on_commit(lambda: _forget(pk))


def _forget(job_id: int) -> None:
    storage.delete_tree(storage.job_prefix(job_id))
    live.reset(job_id)
