"""Asking a worker to inspect a catalog entry (the web process never loads a model itself)."""
from django.db import transaction

from webapp.catalog.models import BaseModel
from webapp.jobs.queue import INSPECT_TASK, enqueue


def request_inspection(entry: BaseModel) -> None:
    """Mark the entry `inspecting` and enqueue the inspect task once the transaction commits."""
    BaseModel.objects.filter(pk=entry.pk).update(status=BaseModel.Status.INSPECTING, error="")
    entry.status, entry.error = BaseModel.Status.INSPECTING, ""
    transaction.on_commit(lambda: _send(entry.pk))


def _send(entry_id: int) -> None:
    enqueue(INSPECT_TASK, [entry_id], on="default")
