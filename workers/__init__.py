"""The glue between Celery/Redis/Django and `trainer`: the Celery app, its tasks and the progress reporter.

`celery -A workers worker` finds the app here. Task modules import `trainer` (and so torch) inside the task
functions, so the web process can enqueue tasks without loading torch.
"""
from workers.celery_app import app

__all__ = ["app"]
