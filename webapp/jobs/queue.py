"""Everything the web process sends to the workers goes through here: the Celery app (configured from Django
settings), the names of the tasks and queues, and the job-specific sends: putting jobs on the training queue,
taking them off (cancel), and where a queued job stands in line.

The web process never imports a task module (nor `workers` at all): it sends each task by its name with
`enqueue` (Celery's `send_task`). A training job goes to queue `train`, or to its worker class's queue
`train.<class>` (webapp.jobs.routing). `workers.celery_app` adds the task modules to this same app and registers
each task under the name below, so a name here and a task there cannot drift apart.
"""
from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import timedelta

import redis
from celery import Celery
from django.db import transaction
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerUnreachable  # what enqueue raises when Redis is down

from webapp.jobs import conf, live, priority, routing, states

QUEUES = ("default", "train", "infer")  # declared by every worker; train.<class> ones are made on first use
TRAIN_TASK = "workers.jobs.train"  # workers.training_tasks
VALIDATE_TASK = "datasets.validate"  # workers.dataset_tasks
INSPECT_TASK = "workers.catalog.inspect"  # workers.catalog_tasks
PLAYGROUND_TASK = "workers.playground"  # workers.inference_tasks (classification playground)
SERVE_TASK = "workers.serve"  # workers.serving_tasks (/v1 and the causal-LM playground)
log = logging.getLogger(__name__)

app = Celery("loraworks")
app.config_from_object("django.conf:settings", namespace="CELERY")  # read on first use, not at import


def enqueue(task_name: str, args: Sequence, on: str, task_id: str | None = None, priority: int | None = None):
    """Send the task `task_name` with `args` to queue `on` (at broker `priority`, 0 first); returns its AsyncResult."""
    return app.send_task(task_name, args=list(args), queue=on, task_id=task_id, priority=priority)


def submit(job) -> None:
    """Give a saved job its task id and send the task once the transaction commits. A send that fails (broker down)
    leaves the job waiting, with a line in its log: the workers' sweep (workers.stale_job_tasks) sends it later."""
    from webapp.jobs.models import Job

    job.celery_task_id = uuid.uuid4().hex
    Job.objects.filter(pk=job.pk).update(celery_task_id=job.celery_task_id)
    pk, task_id = job.pk, job.celery_task_id
    transaction.on_commit(lambda: _send_or_leave_for_the_sweep(pk, task_id))


def _send_or_leave_for_the_sweep(job_id: int, task_id: str) -> None:
    from webapp.jobs.models import Job

    try:
        send(job_id, task_id)
    except Exception as error:  # kombu's connection errors have no common base worth naming
        log.warning("job %s: task not sent (%s); the workers' sweep sends it later", job_id, error)
        line = (f"{timezone.now():%H:%M:%S} the job queue could not be reached ({type(error).__name__}): the job "
                f"stays queued and is sent again within {conf.REQUEUE_AFTER_S} s of the queue coming back")
        Job.objects.filter(pk=job_id).update(log_tail=line)


def send(job_id: int, task_id: str | None = None) -> None:
    """Send (or send again, to resume) the job's task to its class's queue at its priority, both read from the row
    so no caller can route a job elsewhere."""
    from webapp.jobs.models import Job

    worker_class, level = Job.objects.filter(pk=job_id).values_list("worker_class", "priority").first() or ("", "")
    enqueue(TRAIN_TASK, [job_id], on=routing.queue_for(worker_class), task_id=task_id,
            priority=priority.broker_priority(level))


def cancel(job, who: str) -> str:
    """Cancel `job`: a waiting one is marked cancelled and its task revoked; a running one is asked to stop
    (its worker checkpoints and ends it `cancelled`), unless its worker is silent. Returns what happened."""
    from webapp.jobs.models import Job

    if job.state in (states.VALIDATING, states.QUEUED):
        try:
            states.move(job, states.CANCELLED, reason=f"cancelled by {who} before it ran")
        except states.TransitionRefused as refused:
            if refused.current != states.RUNNING:
                return f"it is already {refused.current}"
            job.refresh_from_db()
        else:
            _revoke(job.celery_task_id)
            return "cancelled"
    if job.state == states.RUNNING:
        if worker_is_silent(job):
            states.move(job, states.CANCELLED, reason=f"cancelled by {who}; its worker was not responding")
            return "cancelled"
        # The row first: it holds even when Redis is down; the Redis flag only makes the worker see it sooner.
        Job.objects.filter(pk=job.pk, state=states.RUNNING).update(cancel_requested_at=timezone.now())
        try:
            live.request_cancel(job.pk)
        except redis.RedisError as error:
            log.warning("job %s: cancel flag not set in Redis (%s); the worker reads the database copy", job.pk, error)
        live.publish(job.pk, {"type": "log", "line": f"cancel requested by {who}: stopping at the next step"})
        return "stopping"
    return f"it is already {job.state}"


def _revoke(task_id: str) -> None:
    if not task_id:
        return
    # Best effort: a worker that never heard of the revoke still finds the job cancelled and skips it.
    try:
        app.control.revoke(task_id)
    except Exception:  # broker down: the state check in the task is the real guard
        pass


def worker_is_silent(job) -> bool:
    beat = job.heartbeat_at or job.started_at
    return beat is None or timezone.now() - beat > timedelta(seconds=conf.HEARTBEAT_TIMEOUT_S)


def silent_worker(job) -> dict | None:
    """For a running job whose worker sent no heartbeat for JOB_HEARTBEAT_TIMEOUT_S: {"worker", "since"} (its last
    heartbeat, or its start), so the page can say so even when no worker is left to sweep it; else None."""
    if job.state != states.RUNNING or not worker_is_silent(job):
        return None
    return {"worker": job.worker_name or "unknown", "since": job.heartbeat_at or job.started_at}


def queue_position(job) -> int | None:
    """1 for the next queued job to start on its queue (its worker class's), counting every team's queued jobs
    (only the number is shown): those of a higher priority, and those of its own queued before it, go first, as the
    broker hands them out (webapp.jobs.priority)."""
    from webapp.jobs.models import Job

    if job.state != states.QUEUED or job.queued_at is None:
        return None
    return Job.objects.filter(priority.ahead_of(job), state=states.QUEUED, worker_class=job.worker_class).count() + 1
