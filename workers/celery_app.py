"""The Celery app, configured from Django settings (CELERY_* names), with the queues it serves.

Queues: `default` (validation, inspection, housekeeping), `train` (one job at a time per GPU), `infer` (playground),
and one `train.<class>` per worker class (webapp.jobs.routing), made when first used: `-Q train,train.gpu-large`.
Every `workers/*_tasks.py` module is registered; task modules import `trainer` inside their functions only.
"""
import os
import pkgutil
from pathlib import Path

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

QUEUES = ("default", "train", "infer")
TASK_MODULES = sorted(f"workers.{m.name}" for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                      if m.name.endswith("_tasks"))

app = Celery("loraworks", include=TASK_MODULES)
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = tuple(Queue(name) for name in QUEUES)
# Already Celery's default, relied upon: a queue sent to or served but not declared above is created on first use.
app.conf.task_create_missing_queues = True
