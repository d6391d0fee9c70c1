"""Inspecting catalog entries: `trainer.inspect_model.inspect` on a worker, its result recorded on the entry.

Entries are sent here by the admin (on add, or "Inspect again") and by `manage.py register_demo_models`, which
`./run.sh` runs at start for the demo entries the migration registered. The demo LM is built here on first start;
while it builds, the entry's `info["build"]` says how far ({"step", "steps"}) for the Models page.
"""
import logging

from webapp.jobs.queue import INSPECT_TASK
from workers.celery_app import app

log = logging.getLogger(__name__)
BUILD_PROGRESS_EVERY = 10  # steps between two progress writes of the demo LM build


@app.task(name=INSPECT_TASK, acks_late=True, reject_on_worker_lost=True)
def inspect_entry(entry_id: int) -> str:
    from trainer.errors import TrainerError
    from trainer.inspect_model import inspect
    from trainer.models import TINY_LM

    from webapp.catalog.models import BaseModel

    entry = BaseModel.objects.filter(pk=entry_id).first()
    if entry is None:
        return "gone"
    try:
        if entry.source == TINY_LM:
            _build_demo_lm(entry)
        info = inspect(entry.source)
    except TrainerError as error:
        return _failed(entry, str(error))
    except Exception as error:  # a broken config or weight file: say what it was, keep the worker alive
        log.exception("inspecting %s failed", entry.source)
        return _failed(entry, f"could not inspect {entry.source}: {type(error).__name__}: {error}")
    BaseModel.objects.filter(pk=entry.pk).update(
        status=BaseModel.Status.READY, error="", info=info, architecture=info["architecture"],
        model_type=info["model_type"], task_types=info["tasks"], is_demo=entry.is_demo or info["demo"])
    return BaseModel.Status.READY


def _build_demo_lm(entry) -> None:
    """Build the demo LM into the model cache if it is not there yet, recording its progress on the entry."""
    from trainer.demo_models import DemoSpec, ensure_tiny_lm
    from trainer.models import model_cache_dir

    from webapp.catalog.models import BaseModel

    steps = DemoSpec().steps

    def record(step: int, loss: float) -> None:
        done = step + 1
        if done % BUILD_PROGRESS_EVERY == 0 or done == steps:
            BaseModel.objects.filter(pk=entry.pk, status=BaseModel.Status.INSPECTING).update(
                info={"build": {"step": done, "steps": steps}})

    ensure_tiny_lm(model_cache_dir(), log=record)


def _failed(entry, reason: str) -> str:
    from webapp.catalog.models import BaseModel

    BaseModel.objects.filter(pk=entry.pk).update(status=BaseModel.Status.FAILED, error=reason)
    return BaseModel.Status.FAILED
