"""The worker side of the one Celery app (webapp.jobs.queue makes and configures it): the task modules and queues.

Queues: `default` (validation, inspection, housekeeping), `train` (one job at a time per GPU), `infer` (playground),
and one `train.<class>` per worker class (webapp.jobs.routing), made when first used: `-Q train,train.gpu-large`.
Every `workers/*_tasks.py` module is registered; task modules import `trainer` inside their functions only.
"""
import os
import pkgutil
from pathlib import Path

from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")  # before the app is made: Celery's Django fixup

from webapp.jobs.queue import QUEUES, app  # noqa: E402

TASK_MODULES = sorted(f"workers.{m.name}" for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                      if m.name.endswith("_tasks"))

app.conf.include = TASK_MODULES
app.conf.task_queues = tuple(Queue(name) for name in QUEUES)
# Already Celery's default, relied upon: a queue sent to or served but not declared above is created on first use.
app.conf.task_create_missing_queues = True
