"""The worker side of a running job's liveness: the trainer reporter, the heartbeat and the job lease.

`JobReporter` implements trainer's Reporter protocol. Every step goes to Redis at once (the job page's live
stream and the latest-state key); the database gets progress, history and the log tail at most every
JOB_PROGRESS_DB_INTERVAL_S and whenever `flush` is called (state changes), with brief retries when the database
does not answer. `should_stop` reads the job's cancel flag in Redis every step, and the job row's
`cancel_requested_at` at the database cadence (so a cancel holds without Redis).

`Heartbeat` is a thread that, while a job trains (including long phases with no steps: loading, evaluating,
merging), stamps `heartbeat_at` and renews the job's lease in Redis. The lease is what keeps two deliveries of the
same task (Celery hands a task out again when it thinks its worker died) from training one job twice.
"""
from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections import deque
from contextlib import contextmanager

from django.db import InterfaceError, OperationalError, close_old_connections, connection
from django.utils import timezone

from webapp.jobs import conf, live

log = logging.getLogger(__name__)
LOG_TAIL_LINES = 200
HISTORY_POINTS_KEPT = 2000
EVAL_KEYS = ("loss", "perplexity", "accuracy", "macro_f1", "preference_accuracy", "reward_margin", "reward_accuracy")


def without_paths(line: str) -> str:
    """`line` with the worker's scratch folders cut from its paths (<JOB_WORK_DIR>/job-1-x/data.csv -> data.csv):
    they mean nothing to the team reading the log. Other paths (a model folder, the hub cache) say where to look,
    and stay."""
    root = re.escape(str(conf.work_dir()).rstrip("/"))
    return re.sub(rf"{root}/[^/\s'\"]+/", "", line)


def retry_db(action, *, attempts: int = 5, first_wait_s: float = 0.5):
    """Run `action()`; when the database is unreachable, reconnect and retry with doubling waits."""
    for attempt in range(attempts):
        try:
            return action()
        except (OperationalError, InterfaceError) as error:
            if attempt == attempts - 1:
                raise
            log.warning("database unavailable (%s); retrying in %.1f s", error, first_wait_s * 2 ** attempt)
            connection.close()
            time.sleep(first_wait_s * 2 ** attempt)


def thin(points: list[dict], limit: int = HISTORY_POINTS_KEPT) -> list[dict]:
    """Every other point once there are more than `limit` (the full history is in metrics.json)."""
    return points if len(points) <= limit else points[::2] + ([points[-1]] if len(points) % 2 == 0 else [])


class JobReporter:
    def __init__(self, job, *, after_step=None, db_interval_s: float | None = None):
        self.job_id = job.pk
        self.started = job.started_at or timezone.now()
        self.progress = dict(job.progress)
        self.history = list(job.history)
        self.log_tail = deque(job.log_tail.splitlines(), maxlen=LOG_TAIL_LINES)
        self.unsaved_log: list[str] = []
        self.after_step = after_step
        self.db_interval_s = conf.PROGRESS_DB_INTERVAL_S if db_interval_s is None else db_interval_s
        self.last_flush = 0.0
        self.last_cancel_read = float("-inf")  # the first should_stop reads the row
        self.cancel_in_db = False

    def resume_from(self, step: int) -> None:
        """Forget progress recorded after `step` (the checkpoint the run continues from)."""
        self.history = [p for p in self.history if p.get("step", 0) <= step]

    # --- the Reporter protocol -------------------------------------------------------------------------

    def on_step(self, step, total_steps, loss, lr, tokens_per_s, eta_s, metrics=None):
        elapsed = (timezone.now() - self.started).total_seconds()
        extra = dict(metrics or {})  # DPO: reward_margin, reward_accuracy, chosen_logp, rejected_logp
        self.progress = {"step": step, "total_steps": total_steps, "loss": loss, "lr": lr,
                         "tokens_per_s": tokens_per_s, "eta_s": eta_s, "elapsed_s": elapsed, **extra}
        self.history.append({"step": step, "loss": loss, "lr": lr, **extra})
        live.publish(self.job_id, {"type": "step", **self.progress})
        if self.after_step:
            self.after_step(step)
        if time.monotonic() - self.last_flush >= self.db_interval_s:
            self.flush()

    def on_eval(self, metrics):
        # The trainer names its loss "eval_loss"; history points keep the short name the job page draws from.
        found = {k: metrics.get(k, metrics.get(f"eval_{k}")) for k in EVAL_KEYS}
        scalars = {k: v for k, v in found.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        point = {"step": metrics.get("step", self.progress.get("step", 0)), "stage": metrics.get("stage", ""),
                 "eval": scalars}
        self.history.append(point)
        live.publish(self.job_id, {"type": "eval", **point})
        self.flush()

    def on_log(self, message):
        for line in str(message).splitlines() or [""]:
            stamped = f"{timezone.now():%H:%M:%S} {without_paths(line)}"
            self.log_tail.append(stamped)
            live.publish(self.job_id, {"type": "log", "line": stamped})
            self.unsaved_log.append(stamped)
        self.save_log()

    def save_log(self) -> None:
        """Store the lines not yet stored as the job's "log" events (few: the trainer logs phases, not steps).
        One try, so a database outage does not hold training up: refused lines wait for the next line or flush."""
        from webapp.jobs.models import JobEvent

        lines, self.unsaved_log = self.unsaved_log, []
        try:
            JobEvent.timeline.bulk_create([JobEvent(job_id=self.job_id, kind=JobEvent.LOG, reason=line)
                                           for line in lines])
        except (OperationalError, InterfaceError) as error:
            self.unsaved_log = lines + self.unsaved_log
            log.warning("job %s: log lines not saved yet (%s)", self.job_id, error)
            connection.close()

    def should_stop(self):
        """The Redis flag every step; the job row's cancel_requested_at at the database cadence, which holds when
        Redis is down or lost its keys in a restart."""
        if self.cancel_in_db:
            return True
        try:
            if live.cancel_requested(self.job_id):
                return True
        except Exception as error:  # Redis down: keep training; the database copy is read below
            log.warning("job %s: cannot read the cancel flag (%s)", self.job_id, error)
        if time.monotonic() - self.last_cancel_read >= self.db_interval_s:
            self.last_cancel_read = time.monotonic()
            self.cancel_in_db = self._cancel_recorded()
        return self.cancel_in_db

    def _cancel_recorded(self) -> bool:
        from webapp.jobs.models import Job

        try:
            return retry_db(lambda: Job.objects.filter(pk=self.job_id, cancel_requested_at__isnull=False).exists(),
                            attempts=2)
        except (OperationalError, InterfaceError) as error:
            log.warning("job %s: cannot read the cancel request from the database (%s)", self.job_id, error)
            return False

    # --- the database copy -------------------------------------------------------------------------------

    def snapshot(self) -> dict:
        return {"progress": self.progress, "history": thin(self.history), "log_tail": "\n".join(self.log_tail)}

    def flush(self) -> None:
        """Write progress, history and log tail to the job row (a failed write is logged, training goes on)."""
        from webapp.jobs.models import Job

        self.last_flush = time.monotonic()
        values = {**self.snapshot(), "heartbeat_at": timezone.now()}
        try:
            retry_db(lambda: Job.objects.filter(pk=self.job_id).update(**values))
        except (OperationalError, InterfaceError) as error:
            log.error("job %s: progress not saved, database unreachable: %s", self.job_id, error)
            return
        if self.unsaved_log:
            self.save_log()


class Heartbeat(threading.Thread):
    """Stamps the job's heartbeat and renews its lease every `interval_s` until stopped; at every beat and at the
    stop it also books the seconds worked since the last one × the job's GPUs (webapp.teams.usage), so a killed
    worker loses at most one interval of accounting."""

    def __init__(self, job, lease_token: str, interval_s: float | None = None):
        super().__init__(name=f"heartbeat-{job.pk}", daemon=True)
        self.job_id, self.team_id, self.gpus, self.lease_token = job.pk, job.team_id, job.gpus, lease_token
        self.interval_s = conf.HEARTBEAT_INTERVAL_S if interval_s is None else interval_s
        self.stopped = threading.Event()
        self.booked_until = time.monotonic()

    def run(self):
        from webapp.jobs import states
        from webapp.jobs.models import Job

        try:
            while not self.stopped.wait(self.interval_s):
                # The lease first: a database write can wait on a lock for seconds, the lease must not.
                try:
                    renew_lease(self.job_id, self.lease_token)
                except Exception as error:  # a blip must not end the thread: the next beat tries again
                    log.warning("job %s: lease renewal failed: %s", self.job_id, error)
                try:
                    Job.objects.filter(pk=self.job_id, state=states.RUNNING).update(heartbeat_at=timezone.now())
                    self.book()
                except Exception as error:
                    log.warning("job %s: heartbeat not saved: %s", self.job_id, error)
                    close_old_connections()
            self.book()
        except Exception as error:
            log.warning("job %s: last GPU seconds not booked: %s", self.job_id, error)
        finally:
            connection.close()

    def book(self) -> None:
        from webapp.teams.usage import add_gpu_seconds

        now = time.monotonic()
        add_gpu_seconds(self.job_id, self.team_id, (now - self.booked_until) * self.gpus)
        self.booked_until = now

    def stop(self):
        self.stopped.set()
        self.join(timeout=self.interval_s + 5)


# --- the lease: one delivery of a job's task trains it at a time ---------------------------------------------

def lease_ttl_s() -> int:
    return max(6 * conf.HEARTBEAT_INTERVAL_S, 30)


def _lease_key(job_id: int) -> str:
    return live.key(job_id, "lease")


def renew_lease(job_id: int, token: str) -> None:
    client = live.client()
    if client.get(_lease_key(job_id)) == token.encode():
        client.expire(_lease_key(job_id), lease_ttl_s())


@contextmanager
def job_lease(job_id: int, wait_s: float | None = None):
    """Yield a lease token if this process gets the job's lease within `wait_s` (default: one lease lifetime,
    so a lease left by a killed worker has expired), else None. Released on exit."""
    client = live.client()
    token = uuid.uuid4().hex
    deadline = time.monotonic() + (lease_ttl_s() + 1 if wait_s is None else wait_s)
    acquired = bool(client.set(_lease_key(job_id), token, nx=True, ex=lease_ttl_s()))
    while not acquired and time.monotonic() < deadline:
        time.sleep(0.5)
        acquired = bool(client.set(_lease_key(job_id), token, nx=True, ex=lease_ttl_s()))
    try:
        yield token if acquired else None
    finally:
        if acquired and client.get(_lease_key(job_id)) == token.encode():
            client.delete(_lease_key(job_id))
