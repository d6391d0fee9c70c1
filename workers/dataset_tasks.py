"""Dataset validation on a worker (queue `default`): the same `trainer.data.validate` a training job runs.

The task reads the dataset's file(s) from storage (a local copy when the storage has no local path), measures
lengths with the chosen base model's tokenizer when one is set (else a byte estimate), and stores the report:
status `ready` or `invalid`. Whatever goes wrong ends as a message a person can read, never a traceback; the
traceback goes to the worker log. Results are written only for the revision the task was queued for.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import shutil
import tempfile
from pathlib import Path, PurePosixPath

from django.core.files.storage import default_storage

from webapp.jobs.queue import VALIDATE_TASK
from workers.celery_app import app

log = logging.getLogger(__name__)
COLUMN_SNIFF_ROWS = 100
PREVIEW_CHARS = 4000  # per preview row: enough to read, small enough to keep reports light


@app.task(name=VALIDATE_TASK)
def validate_dataset(dataset_id: int, revision: int) -> str:
    from webapp.datasets.models import Dataset

    dataset = Dataset.objects.select_related("analysis_model").filter(pk=dataset_id, revision=revision).first()
    if dataset is None:
        return "superseded"  # deleted, or validated again with newer settings
    try:
        report = run_validation(dataset, lambda done, size: Dataset.record_progress(
            dataset_id, revision, done / size if size else 0.0))
    except Exception as error:  # noqa: BLE001 - the page shows a message; the log keeps the traceback
        log.exception("validating dataset %s failed", dataset_id)
        Dataset.record_failure(dataset_id, revision, f"Validation stopped unexpectedly ({type(error).__name__}). "
                                                     "Try again; if it keeps failing, tell an administrator.")
        return "failed"
    Dataset.record_report(dataset_id, revision, report)
    return "ready" if report["usable"] else "invalid"


def run_validation(dataset, progress) -> dict:
    from trainer.data.validate import validate_file

    tokenizer, warning = _tokenizer(dataset.analysis_model)
    with contextlib.ExitStack() as stack:
        train = stack.enter_context(local_copy(dataset.file.name))
        evaluation = stack.enter_context(local_copy(dataset.eval_file.name)) if dataset.eval_file else None
        report = validate_file(train, tokenizer=tokenizer, max_length=dataset.max_length,
                               column_mapping=dataset.column_mapping or None, eval_path=evaluation,
                               progress=progress).to_dict()
        if not report["columns"]:
            report["columns"] = file_columns(train)
    if warning:
        report["warnings"].insert(0, warning)
    report["tokenizer"] = dataset.analysis_model.source if tokenizer is not None else None
    report["preview"] = [_clip(row) for row in report["preview"]]
    return report


def file_columns(path) -> list[str]:
    """The file's column names (CSV header, or the first row's fields): the choices of the column mapping form.

    The validator leaves them out when it cannot recognise the format, which is just when a mapping is needed.
    """
    from trainer.data.reader import RowProblem, open_rows
    from trainer.errors import DataError

    try:
        with open_rows(path) as stream:
            if stream.columns:
                return list(stream.columns)
            for item in itertools.islice(stream, COLUMN_SNIFF_ROWS):
                if not isinstance(item, RowProblem):
                    return list(item[1])
    except DataError:
        pass
    return []


def _tokenizer(base_model):
    """(tokenizer or None, warning or None): a base model that cannot be loaded falls back to the estimate."""
    if base_model is None:
        return None, None
    from trainer.errors import TrainerError
    from trainer.models import resolve_model_path

    try:
        return tokenizer_without_torch(resolve_model_path(base_model.source)), None
    except (TrainerError, OSError, ValueError) as error:
        return None, f"could not load the tokenizer of {base_model.name} ({error}); lengths are estimated"


def tokenizer_without_torch(folder):
    """The folder's tokenizer, read straight from its tokenizer.json when it has one.

    `AutoTokenizer` imports torch (about 230 MB more in this worker, for good); `PreTrainedTokenizerFast` on the
    same tokenizer.json and tokenizer_config.json tokenizes, adds special tokens and applies the chat template
    the same way (the validation reports are identical), without it. Folders without a tokenizer.json use
    trainer's own loader.
    """
    if not (Path(folder) / "tokenizer.json").is_file():
        from trainer.models import load_tokenizer

        return load_tokenizer(folder)
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(folder))


@contextlib.contextmanager
def local_copy(name: str):
    """A local file path for storage object `name`: its own path on local storage, else a streamed temp copy."""
    try:
        path = default_storage.path(name)
    except NotImplementedError:
        path = None
    if path is not None:
        yield path
        return
    with tempfile.NamedTemporaryFile(suffix="".join(PurePosixPath(name).suffixes)) as copy:
        with default_storage.open(name, "rb") as source:
            shutil.copyfileobj(source, copy, 2**20)
        copy.flush()
        yield copy.name


def _clip(row: dict) -> dict:
    """A preview row whose segments together hold at most PREVIEW_CHARS characters."""
    left, segments = PREVIEW_CHARS, []
    for segment in row["segments"]:
        if left <= 0:
            segments.append({"text": "…", "loss": False})
            break
        segments.append({**segment, "text": segment["text"][:left]})
        left -= len(segment["text"])
    return {**row, "segments": segments}
