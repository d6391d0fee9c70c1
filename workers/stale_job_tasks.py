"""The sweeper, a thread in every worker: it finds running jobs with no heartbeat for JOB_HEARTBEAT_TIMEOUT_S and
enqueues their resumption (workers.training_tasks resumes them from their last checkpoint), or fails them when they
were already resumed JOB_MAX_RESUMES times; and it sends again the task of a job left waiting over
JOB_REQUEUE_AFTER_S whose message the broker no longer has. Several workers sweep at once: each step is claimed
first, so one of them acts.
"""
from __future__ import annotations

import json
import logging
import threading
from datetime import timedelta

from celery.signals import worker_ready
from django.db import connection
from django.db.models.functions import Coalesce
from django.utils import timezone

from webapp.jobs import conf, live, queue, routing, states
from workers.celery_app import app
from workers.training_tasks import fail_job, lost_worker_message

log = logging.getLogger(__name__)


def sweep_stale_jobs(now=None) -> dict:
    """Resume (or fail) running jobs whose worker sent no heartbeat for JOB_HEARTBEAT_TIMEOUT_S."""
    from webapp.jobs.models import Job

    now = now or timezone.now()
    cutoff = now - timedelta(seconds=conf.HEARTBEAT_TIMEOUT_S)
    outcome = {"resumed": [], "failed": []}
    for job in Job.objects.filter(state=states.RUNNING, heartbeat_at__lt=cutoff):
        # Claim it (several workers sweep): only the one whose update lands acts on it.
        if not Job.objects.filter(pk=job.pk, state=states.RUNNING, heartbeat_at=job.heartbeat_at).update(
                heartbeat_at=now):
            continue
        resumes = states.resume_count(job)
        if resumes >= conf.MAX_RESUMES:
            fail_job(job, None, lost_worker_message(job, resumes))
            outcome["failed"].append(job.pk)
        else:
            queue.send(job.pk)
            outcome["resumed"].append(job.pk)
    return outcome


def resend_lost_tasks(now=None) -> list[int]:
    """Send again the task of each job waiting (queued, or validating) for over JOB_REQUEUE_AFTER_S whose message
    is in no queue of the broker and not held by a worker: lost in a Redis restart without persistence, or never
    sent because the broker was down at submit. The ids of the jobs sent again.

    A message the scan misses (in flight between a queue and a worker) only costs a duplicate delivery, which is
    harmless: the job lease lets one delivery at a time in, and the state compare-and-set (queued -> running
    once; a terminal job is skipped) makes any later one find nothing to do."""
    from webapp.jobs.models import Job

    now = now or timezone.now()
    cutoff = now - timedelta(seconds=conf.REQUEUE_AFTER_S)
    # A job without a task id was never submitted (queue.submit gives one before sending): not ours to send.
    waiting = list(Job.objects.filter(state__in=(states.QUEUED, states.VALIDATING))
                   .exclude(celery_task_id="")
                   .annotate(waiting_since=Coalesce("queued_at", "created_at"))
                   .filter(waiting_since__lt=cutoff))
    if not waiting:
        return []
    in_broker = task_ids_in_broker({routing.queue_for(job.worker_class) for job in waiting})
    resent = []
    for job in waiting:
        # Several workers sweep: the first to set this key (it expires after one threshold) sends, the others skip.
        if job.celery_task_id in in_broker or not live.client().set(live.key(job.pk, "resent"), "1", nx=True,
                                                                     ex=conf.REQUEUE_AFTER_S):
            continue
        if Job.objects.filter(pk=job.pk, state=job.state).exists():  # not started or cancelled since the scan
            queue.send(job.pk, job.celery_task_id)
            resent.append(job.pk)
    return resent


def task_ids_in_broker(queues: set[str]) -> set[str]:
    """The task ids of the messages waiting in `queues` (each priority's Redis list) and of those delivered to a
    worker but not acknowledged yet (kombu's `unacked` hash): Celery's Redis transport layout."""
    ids = set()
    with app.connection_for_read() as broker:
        channel = broker.default_channel
        client = channel.client
        for name in queues:
            for listed in priority_lists(channel, name):
                ids.update(_task_id(raw) for raw in client.lrange(listed, 0, -1))
        ids.update(_task_id(raw, unacked=True) for raw in client.hvals(channel.unacked_key))
    return ids


def priority_lists(channel, queue_name: str) -> list[str]:
    """The Redis lists holding `queue_name`'s messages, one per priority step, in the order a worker serves them
    (a job's priority picks its list: webapp.jobs.priority)."""
    return [channel._q_for_pri(queue_name, step) for step in channel.priority_steps]


def _task_id(raw: bytes, unacked: bool = False) -> str | None:
    message = json.loads(raw)
    return (message[0] if unacked else message).get("headers", {}).get("id")


def _sweep_forever(interval_s: float) -> None:
    stop = threading.Event()
    while not stop.wait(interval_s):
        try:
            found = sweep_stale_jobs()
            found["sent again"] = resend_lost_tasks()
            if any(found.values()):
                log.info("stale jobs: %s", found)
        except Exception as error:  # the sweeper must outlive a database or broker blip
            log.warning("stale-job sweep failed: %s", error)
        finally:
            connection.close()


@worker_ready.connect
def start_sweeper(sender=None, **kwargs):
    interval = max(conf.HEARTBEAT_TIMEOUT_S / 4, 2)
    threading.Thread(target=_sweep_forever, args=(interval,), name="stale-job-sweeper", daemon=True).start()
