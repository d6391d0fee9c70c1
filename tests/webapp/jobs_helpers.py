"""Builders shared by the jobs tests: a ready catalog entry (tiny model saved by tests/trainer/tiny_models.py),
a team dataset stored in artifact storage, a job row, and waiting for something a worker does."""
from __future__ import annotations

import json
import time
import uuid
from functools import lru_cache
from pathlib import Path

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage


LABELS = ("billing", "bug", "other")
WORDS = {"billing": ["invoice", "refund", "charge", "payment"], "bug": ["crash", "error", "broken", "freeze"],
         "other": ["hello", "thanks", "question", "idea"]}


def classification_rows(count: int = 48) -> list[dict]:
    return [{"text": f"my {WORDS[label][i % 4]} issue number {i}", "label": label}
            for i, label in ((i, LABELS[i % 3]) for i in range(count))]


def completion_rows(count: int = 48) -> list[dict]:
    return [{"prompt": f"Say {i} twice:", "completion": f" {i} {i}"} for i in range(count)]


@lru_cache(maxsize=None)
def saved_tiny(kind: str, folder: Path) -> tuple[Path, dict]:
    """Tiny model `kind` saved into `folder` (once per folder) and its inspect report, made in this process
    (tests may load torch; the web process may not)."""
    import tiny_models
    from trainer.inspect_model import inspect

    path = tiny_models.save_tiny(kind, folder)
    return path, inspect(str(path))


def tiny_entry(kind: str, folder: Path, **fields):
    """A ready BaseModel for tiny model `kind` saved into `folder`."""
    from webapp.catalog.models import BaseModel

    path, info = saved_tiny(kind, folder)
    return BaseModel.objects.create(name=f"tiny {kind}", source=str(path), status="ready", info=info,
                                    architecture=info["architecture"], model_type=info["model_type"],
                                    task_types=info["tasks"], **fields)


def stored_dataset(team, rows: list[dict], *, task: str, status: str = "ready", **fields):
    from webapp.datasets.models import Dataset

    name = default_storage.save(f"datasets/{uuid.uuid4().hex}.jsonl",
                                ContentFile("".join(json.dumps(r) + "\n" for r in rows).encode()))
    return Dataset.objects.create(team=team, name=fields.pop("name", "tickets"), original_filename="tickets.jsonl",
                                  file=name, size_bytes=default_storage.size(name), status=status, task=task,
                                  format=fields.pop("format", "classification" if task == "classification"
                                                    else "prompt_completion"),
                                  rows=len(rows), **fields)


def make_job(team, base_model, dataset, *, state: str = "queued", settings: dict | None = None, **fields):
    from webapp.jobs import states
    from webapp.jobs.models import Job

    job = Job.objects.create(team=team, name=fields.pop("name", "job"), base_model=base_model, dataset=dataset,
                             task=fields.pop("task", dataset.task), settings=settings or {}, state=state, **fields)
    states.record_creation(job, "created by a test")
    job.refresh_from_db()
    return job


def wait_for(predicate, timeout_s: float = 120, every_s: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
