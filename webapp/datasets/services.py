"""What the datasets pages and the API both do: create a dataset from uploaded files, and delete one.

Both keep storage and the database in step: a failed create leaves no stored file; a delete removes the files only
once the row is gone for good (after commit), and is refused while jobs use the dataset.
"""
from __future__ import annotations

from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import ProtectedError

from webapp.datasets.models import Dataset
from webapp.datasets.uploads import label, store
from webapp.datasets.usage import active_jobs_using, jobs_using, refusal_message
from webapp.teams.quotas import check_storage


class DatasetInUse(Exception):
    """The dataset is used by jobs; the message names them and says what to do."""


def create_dataset(team, user, data: dict, *, column_mapping: dict | None = None) -> Dataset:
    """Store `data["file"]` (and `data["eval_file"]`) under generated names, create the row and queue its
    validation. `data` is an UploadForm's cleaned data. QuotaExceeded when the files would take the team past its
    storage quota. On any failure nothing stays stored."""
    train, evaluation = data["file"], data.get("eval_file")
    check_storage(team, train.size + (evaluation.size if evaluation else 0))
    stored = []
    try:
        stored.append(store(train))
        if evaluation:
            stored.append(store(evaluation))
        with transaction.atomic():
            name = (data.get("name") or "").strip() or label(train.name)[:200]
            dataset = Dataset(team=team, created_by=user, name=name, original_filename=label(train.name),
                              file=stored[0], size_bytes=train.size, column_mapping=column_mapping or {})
            if evaluation:
                dataset.eval_file, dataset.eval_original_filename = stored[1], label(evaluation.name)
                dataset.eval_size_bytes = evaluation.size
            dataset.start_validation()
        return dataset
    except BaseException:
        for name in stored:
            default_storage.delete(name)
        raise


def delete_dataset(dataset: Dataset) -> None:
    """Delete the row, then its files. DatasetInUse while an active job uses it, or a finished job refers to it."""
    jobs = active_jobs_using(dataset)
    if jobs:
        raise DatasetInUse(refusal_message(dataset, jobs))
    files = [f.name for f in (dataset.file, dataset.eval_file) if f]
    try:
        with transaction.atomic():
            dataset.delete()
            transaction.on_commit(lambda: [default_storage.delete(name) for name in files])
    except ProtectedError:
        raise DatasetInUse(refusal_message(dataset, list(jobs_using(dataset)), why="finished")) from None
