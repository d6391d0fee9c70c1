"""Job: one fine-tuning run of a team, from the form's settings to its metrics and artifacts; JobEvent: its history.

A job's `state` changes only through `webapp.jobs.states.move`, which also records a JobEvent. `progress` and
`history` are the database copy of what the worker streams to Redis every step (written every few seconds and at
every state change). Artifacts are storage names under `jobs/<id>/`, set only once the files are complete.
"""
from django.db import models

from webapp.jobs import state_names
from webapp.teams.models import TeamOwned


def percent_done(state: str, progress: dict) -> float:
    """How far a job in `state` with `progress` ({"step", "total_steps"}) is, in percent (0.0 to 100.0)."""
    total = progress.get("total_steps") or 0
    if state == state_names.SUCCEEDED:
        return 100.0
    return round(100.0 * min(progress.get("step", 0) / total, 1.0), 1) if total else 0.0


class Job(TeamOwned):
    name = models.CharField(max_length=200)
    base_model = models.ForeignKey("catalog.BaseModel", on_delete=models.PROTECT, related_name="jobs")
    dataset = models.ForeignKey("datasets.Dataset", on_delete=models.PROTECT, related_name="jobs")
    eval_dataset = models.ForeignKey("datasets.Dataset", on_delete=models.PROTECT, null=True, blank=True,
                                     related_name="eval_jobs")
    task = models.CharField(max_length=20, choices=[(t, t) for t in state_names.TASKS])
    # The succeeded job (same base model) whose adapter this one starts from instead of a fresh one.
    start_from = models.ForeignKey("self", on_delete=models.PROTECT, null=True, blank=True,
                                   related_name="continued_by")
    # The TrainConfig-shaped dict of LoRA and training settings (no paths: the worker fills those in).
    settings = models.JSONField(default=dict)
    state = models.CharField(max_length=20, choices=state_names.CHOICES, default=state_names.QUEUED, db_index=True)
    celery_task_id = models.CharField(max_length=100, blank=True)
    # The worker class it asked for (webapp.jobs.routing): blank = any training worker. worker_name: who ran it.
    worker_class = models.CharField(max_length=100, blank=True)
    worker_name = models.CharField(max_length=200, blank=True)
    # Which of a team's waiting jobs starts first (webapp.jobs.priority); the broker hands out high before normal.
    priority = models.CharField(max_length=10, choices=[(p, p) for p in state_names.PRIORITIES],
                                default=state_names.NORMAL)
    # Accounting (workers.progress.Heartbeat): the GPUs the job's worker gives it, and worker seconds × gpus so far.
    gpus = models.PositiveSmallIntegerField(default=1)
    gpu_seconds = models.FloatField(default=0)
    # step, total_steps, loss, lr, tokens_per_s, eta_s, elapsed_s
    progress = models.JSONField(default=dict, blank=True)
    # [{"step", "loss", "lr"}] train points and [{"step", "eval": {...}}] eval points
    history = models.JSONField(default=list, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    log_tail = models.TextField(blank=True)
    # {"adapter": "jobs/<id>/adapter/", "merged": "jobs/<id>/merged/" or None, "metrics": "jobs/<id>/metrics.json"}
    artifacts = models.JSONField(default=dict, blank=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # Set when someone asks a running job to stop: the worker's reporter reads it (as well as the Redis flag), so a
    # cancel holds even when Redis is down or was restarted.
    cancel_requested_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["team", "-created_at"]), models.Index(fields=["state", "queued_at"])]

    def __str__(self):
        return f"{self.name} ({self.state})"

    @property
    def is_terminal(self) -> bool:
        return self.state in state_names.TERMINAL

    @property
    def percent(self) -> float:
        return percent_done(self.state, self.progress)

    def recorded_progress(self) -> dict:
        """The stored progress, without an ETA once the job has ended (a cancelled run has nothing left to wait for)."""
        progress = dict(self.progress or {})
        if self.is_terminal:
            progress.pop("eta_s", None)
        return progress

    @property
    def kept_step(self) -> int | None:
        """The step of the adapter a cancelled run kept (its last checkpoint's weights), or None."""
        if self.state == state_names.CANCELLED and (self.artifacts or {}).get("adapter"):
            return self.artifacts.get("kept_step")
        return None

    @property
    def has_adapter(self) -> bool:
        """Its adapter can be downloaded and continued: it succeeded, or it was cancelled and kept one."""
        return self.state == state_names.SUCCEEDED or self.kept_step is not None

    def storage_prefix(self) -> str:
        return f"jobs/{self.pk}/"


class StateChanges(models.Manager):
    def get_queryset(self):
        return super().get_queryset().filter(kind=JobEvent.STATE)


class JobEvent(models.Model):
    """One entry of a job's history: a state change (from, to, why; written by states.move in the same transaction)
    or a line of the worker's log (kind "log", the line in `reason`; written by the worker's reporter).

    `objects` and `job.events` hold the state changes only, what the job page and the state machine read;
    `timeline` holds both kinds, in the order they were written (by pk), for the API's paginated events.
    """

    STATE, LOG = "state", "log"

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=10, choices=[(STATE, STATE), (LOG, LOG)], default=STATE)
    from_state = models.CharField(max_length=20, blank=True)
    to_state = models.CharField(max_length=20, blank=True)
    reason = models.TextField(blank=True)
    at = models.DateTimeField(auto_now_add=True)

    objects = StateChanges()
    timeline = models.Manager()

    class Meta:
        ordering = ["at", "pk"]
        base_manager_name = "timeline"  # deleting a job (cascade) removes its log lines too

    def __str__(self):
        if self.kind == self.LOG:
            return f"job {self.job_id}: log {self.reason[:60]}"
        return f"job {self.job_id}: {self.from_state or '-'} -> {self.to_state}"
