"""Training a job on a worker (queue `train`), and resuming it after a lost worker.

`train_job` copies the dataset from storage to a local scratch folder, runs `trainer.train.train` with a
`JobReporter` (on all of the worker's GPUs, and again after a lost process: workers.data_parallel_jobs), uploads
checkpoints to storage as they appear (`jobs/<id>/checkpoints/step-N/`, then a `latest.json` pointer written
last, so a half-uploaded checkpoint is never used), and at the end uploads the adapter, the merged model and
metrics.json before marking the job succeeded; when storage fills up (or fails) part way, what was uploaded of
them is deleted, so no half-written adapter is ever offered. Late acknowledgement means a task
whose worker was killed is handed out again: the new delivery finds the job `running`, downloads the last
checkpoint and continues (`resume=True`). With MLFLOW_TRACKING_URI set, the run is also logged to MLflow
(workers.tracking). The job lease (workers.progress) keeps two deliveries from both training.

Jobs whose worker went silent are found by the sweeper (workers.stale_job_tasks).
"""
from __future__ import annotations

import errno
import json
import logging
import shutil
import tempfile
import traceback
from pathlib import Path

from webapp.jobs import conf, queue, states
from webapp.jobs.storage import (delete_file, delete_tree, get_file, job_prefix, put_bytes, put_file, put_tree,
                                 read_bytes)
from workers import capacity, tracking
from workers.celery_app import app
from workers.data_parallel_jobs import train_on_processes
from workers.progress import Heartbeat, JobReporter, job_lease, retry_db

log = logging.getLogger(__name__)
VALIDATION_POLL_S = 3
SCRATCH_NEARLY_FULL = 1024 * 1024  # bytes free below which a vague write error is taken for a full scratch disk


class StorageFull(Exception):
    """Artifact storage, or the worker's local scratch folder, ran out of space (the message says which, and what
    to do)."""


def is_disk_full(error: BaseException) -> bool:
    """ENOSPC or EDQUOT, whether raised as an OSError or reported inside another library's message (safetensors
    says "No space left on device (os error 28)")."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return any(words in str(error) for words in ("No space left on device", "Disk quota exceeded"))


def scratch_is_full(error: BaseException, work: Path) -> bool:
    """The error came from the local scratch folder running out of space: said so (is_disk_full), or it is a write
    error that says nothing useful (torch.save's "unexpected pos") while that disk has (almost) no space left."""
    if is_disk_full(error):
        return True
    try:
        return isinstance(error, (OSError, RuntimeError)) and shutil.disk_usage(work).free < SCRATCH_NEARLY_FULL
    except OSError:
        return False


def scratch_full_message(error: BaseException, root: Path) -> str:
    return (f"the worker's local scratch folder JOB_WORK_DIR ({root}) is full: writing this job's files there failed "
            f"({getattr(error, 'strerror', None) or error}). Free space on that disk, or point JOB_WORK_DIR at a "
            "bigger one (an administrator's job), then start the job again with Clone.")


@app.task(name=queue.TRAIN_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def train_job(self, job_id: int) -> str:
    job = _load(job_id)
    if job is None or job.is_terminal:
        return "nothing to do"
    if job.state == states.VALIDATING:
        dataset_state = _dataset_gate(job)
        if dataset_state == "validating":
            raise self.retry(countdown=VALIDATION_POLL_S)
        if dataset_state == "failed":
            return states.FAILED
    with job_lease(job_id) as token:
        if token is None:
            return "duplicate delivery: another worker holds this job"
        job = _load(job_id)
        if job is None or job.is_terminal:
            return "nothing to do"
        resuming = job.state == states.RUNNING
        if resuming and states.resume_count(job) >= conf.MAX_RESUMES:
            fail_job(job, None, lost_worker_message(job, states.resume_count(job)))
            return states.FAILED
        try:
            # Booked for accounting: the worker holds all its GPUs for the job, even one that trains on fewer.
            states.move(job, states.RUNNING, worker_name=self.request.hostname or "", error="",
                        gpus=capacity.processes_per_job(), celery_task_id=self.request.id or job.celery_task_id,
                        reason=f"resumed on {self.request.hostname} after its worker was lost" if resuming
                        else f"started on {self.request.hostname}")
        except states.TransitionRefused:
            return "cancelled before it started"
        return _run(job, token, resuming)


def _load(job_id: int):
    from webapp.jobs.models import Job

    return retry_db(lambda: Job.objects.select_related("base_model", "dataset", "eval_dataset")
                    .filter(pk=job_id).first())


def _dataset_gate(job) -> str:
    """For a job waiting on its dataset's validation: `validating` (still), `failed`, or `ready` (now queued)."""
    for dataset in filter(None, (job.dataset, job.eval_dataset)):
        if dataset.status == "invalid":
            fail_job(job, None, f"dataset {dataset.name!r} is invalid: {dataset.error or 'see its page'}. "
                                "Fix the file (the dataset page lists the rows at fault) and start a new job.")
            return "failed"
    if any(d.status == "validating" for d in filter(None, (job.dataset, job.eval_dataset))):
        return "validating"
    if job.dataset.needs_row_confirmation:
        fail_job(job, None, f"{job.dataset.row_confirmation_message()} Then start this job again with Clone.")
        return "failed"
    try:
        states.move(job, states.QUEUED, reason="dataset validated")
    except states.TransitionRefused:
        return "failed"
    return "ready"


def lost_worker_message(job, resumes: int) -> str:
    return (f"the worker running this job ({job.worker_name or 'unknown'}) stopped sending heartbeats, and the job "
            f"was already resumed {resumes} time(s) after losing its worker, so it is not resumed again. Workers "
            "that die repeatedly on one job are often out of memory: lower batch size, max length or rank "
            "(or raise gradient accumulation), then start it again with Clone.")


# --- one run ---------------------------------------------------------------------------------------------------

def _run(job, lease_token: str, resuming: bool) -> str:
    from trainer.errors import TrainerError

    reporter = JobReporter(job)
    heartbeat = Heartbeat(job, lease_token)
    heartbeat.start()
    tracker = tracking.start(job, resuming=resuming, warn=reporter.on_log)
    root = conf.work_dir()
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"job-{job.pk}-", dir=root))
    outcome = states.FAILED  # what the tracker records unless the run gets further
    try:
        checkpoints = CheckpointSync(job, work / "out" / "checkpoints", before_pointer=reporter.flush)
        reporter.after_step = checkpoints.sync
        if not resuming:
            delete_tree(job_prefix(job.pk))  # whatever is there belongs to no run of this job
        if resuming:
            step = checkpoints.restore()
            reporter.resume_from(step or 0)
            reporter.on_log(f"worker lost: resuming from the checkpoint at step {step}" if step
                            else "worker lost before any checkpoint: starting again from the beginning")
        reporter.flush()
        config = train_config(job, work, resume=resuming)
        metrics = train_on_processes(job, config, reporter, tracker.tee(reporter))
        checkpoints.sync()
        outcome = _finish(job, reporter, metrics, work / "out")
        return outcome
    except (TrainerError, StorageFull) as error:
        return fail_job(job, reporter, str(error))
    except FileNotFoundError as error:
        return fail_job(job, reporter, f"a file this job needs is missing from storage "
                                       f"({error.filename or error}); upload the dataset again and start a new job")
    except Exception as error:  # anything else: the person gets the type and message, the log the traceback
        if scratch_is_full(error, work):  # storage's own "full" was raised as StorageFull at its call sites
            reporter.on_log(traceback.format_exc())
            return fail_job(job, reporter, scratch_full_message(error, root))
        log.exception("job %s failed", job.pk)
        reporter.on_log(traceback.format_exc())
        return fail_job(job, reporter, f"the worker hit an unexpected error: {type(error).__name__}: {error}. "
                                       "The log has the details; if it happens again, tell an administrator.")
    finally:
        tracker.end(outcome, work / "out")
        heartbeat.stop()
        shutil.rmtree(work, ignore_errors=True)


def train_config(job, work: Path, *, resume: bool):
    """The TrainConfig for `job`: its settings plus local copies of its data files and its work folders."""
    from trainer.config import TrainConfig

    data = _local_copy(job.dataset.file.name, work / "data")
    # A separate eval dataset has columns (and a mapping) of its own; an eval file uploaded with the training data
    # shares its mapping.
    eval_source = job.eval_dataset or job.dataset
    eval_name = job.eval_dataset.file.name if job.eval_dataset else (job.dataset.eval_file.name or None)
    values = {"checkpoint_every": conf.CHECKPOINT_EVERY, **job.settings,
              "model": job.base_model.source, "task": job.task, "data": str(data), "out": str(work / "out"),
              "eval_data": str(_local_copy(eval_name, work / "eval")) if eval_name else None,
              "column_mapping": job.dataset.column_mapping or {},
              "eval_column_mapping": eval_source.column_mapping or {}, "resume": resume}
    if job.start_from_id:  # its adapter, from storage, is where this run starts
        from webapp.results.artifacts import copy_to_folder

        values["init_adapter"] = str(copy_to_folder(job.start_from.artifacts["adapter"], work / "start_from"))
    config = TrainConfig.from_dict(values)
    config.check()
    return config


def _local_copy(name: str, stem: Path) -> Path:
    # Keep the extension: the reader tells JSONL, JSON and CSV apart by it.
    return get_file(name, stem.with_suffix("".join(Path(name).suffixes)))


def _finish(job, reporter: JobReporter, metrics: dict, out: Path) -> str:
    if metrics.get("status") == "stopped":
        reporter.on_log("cancelled: stopped at the next step, last checkpoint kept")
        return _move_final(job, states.CANCELLED, "cancelled while running",
                           artifacts=_kept_adapter(out, job, metrics["steps"]), **reporter.snapshot())
    reporter.on_log("uploading the adapter" + (" and the merged model" if (out / "merged").is_dir() else ""))
    artifacts = _upload_results(out, job_prefix(job.pk))
    reporter.on_log("done")
    saved = json.loads((out / "metrics.json").read_text())
    return _move_final(job, states.SUCCEEDED, "training finished", metrics=saved, artifacts=artifacts,
                       **reporter.snapshot())


def _kept_adapter(out: Path, job, step: int) -> dict:
    """A cancelled run's adapter (its last checkpoint's weights) in storage: {"adapter": prefix, "kept_step": N},
    or {} when it could not be stored (the job is cancelled all the same)."""
    prefix = job_prefix(job.pk) + "adapter/"
    try:
        put_tree(out / "adapter", prefix)
    except OSError:
        log.exception("job %s: the cancelled run's adapter could not be stored", job.pk)
        delete_tree(prefix)
        return {}
    return {"adapter": prefix, "merged": None, "kept_step": step}


def _upload_results(out: Path, prefix: str) -> dict:
    """Upload the adapter, the merged model (if any) and metrics.json; all of them, or (on an error) none."""
    artifacts = {"adapter": prefix + "adapter/", "merged": None, "metrics": prefix + "metrics.json"}
    saving = "adapter"
    try:
        put_tree(out / "adapter", artifacts["adapter"])
        if (out / "merged").is_dir():
            saving, artifacts["merged"] = "merged model", prefix + "merged/"
            put_tree(out / "merged", artifacts["merged"])
        saving = "metrics"
        put_file(out / "metrics.json", artifacts["metrics"])
    except OSError as error:
        delete_tree(prefix + "adapter/")  # also frees the space a full storage needs back
        delete_tree(prefix + "merged/")
        delete_file(artifacts["metrics"])
        raise_if_storage_full(error, f"saving the {saving}", "what was written of the results was deleted")
        raise
    return artifacts


def raise_if_storage_full(error: OSError, doing: str, cleaned: str) -> None:
    if is_disk_full(error):
        raise StorageFull(f"artifact storage is full: {doing} failed ({error.strerror or error}), and {cleaned}. "
                          "Free space in storage (or ask an administrator to), then start the job again with "
                          "Clone.") from error


def fail_job(job, reporter: JobReporter | None, message: str) -> str:
    extra = {}
    if reporter is not None:
        reporter.on_log(f"failed: {message}")
        extra = reporter.snapshot()
    return _move_final(job, states.FAILED, message, error=message, **extra)


def _move_final(job, state: str, reason: str, **fields) -> str:
    try:
        retry_db(lambda: states.move(job, state, reason=reason, **fields))
    except states.TransitionRefused as refused:
        log.warning("job %s: %s", job.pk, refused)
        return refused.current or "gone"
    return state


# --- checkpoints in storage ------------------------------------------------------------------------------------

class CheckpointSync:
    """Mirrors the newest complete local checkpoint to `jobs/<id>/checkpoints/`, and brings it back to resume."""

    POINTER = "latest.json"

    def __init__(self, job, local_root: Path, before_pointer=None):
        self.prefix = f"{job_prefix(job.pk)}checkpoints/"
        # Who wrote a pointer: a database rebuilt from scratch reuses ids, never creation times.
        self.owner = f"{job.pk}@{job.created_at.isoformat()}"
        self.local_root = local_root
        self.before_pointer = before_pointer
        self.uploaded: str | None = None

    def sync(self, _step: int | None = None) -> bool:
        """Upload the newest local checkpoint if it is not in storage yet; True when it did."""
        from trainer.checkpoint import list_checkpoints

        found = list_checkpoints(self.local_root)
        if not found or found[-1].name == self.uploaded:
            return False
        newest = found[-1]
        try:
            files = put_tree(newest, f"{self.prefix}{newest.name}/")
            # The database gets the loss history up to this checkpoint before the pointer names it: a worker killed
            # in between then resumes from the previous checkpoint, and either way the history has no gap.
            if self.before_pointer:
                self.before_pointer()
            put_bytes(json.dumps({"checkpoint": newest.name, "job": self.owner,
                                  "files": [name.removeprefix(self.prefix) for name in files]}).encode(),
                      self.prefix + self.POINTER)
        except OSError as error:
            delete_tree(f"{self.prefix}{newest.name}/")  # never half a checkpoint: the pointer names the previous
            raise_if_storage_full(error, f"uploading the checkpoint {newest.name}",
                                  "the half-uploaded checkpoint was deleted")
            raise
        self._drop_others(keep=newest.name)
        self.uploaded = newest.name
        return True

    def restore(self) -> int | None:
        """Download the last uploaded checkpoint into the local folder; its step, or None if there is none."""
        from django.core.files.storage import default_storage

        if not default_storage.exists(self.prefix + self.POINTER):
            return None
        pointer = json.loads(read_bytes(self.prefix + self.POINTER))
        if pointer.get("job") != self.owner:
            return None
        for name in pointer["files"]:
            get_file(self.prefix + name, self.local_root / name)
        self.uploaded = pointer["checkpoint"]
        return int(pointer["checkpoint"].rsplit("-", 1)[-1])

    def _drop_others(self, keep: str) -> None:
        from django.core.files.storage import default_storage

        folders, _ = default_storage.listdir(self.prefix)
        for folder in folders:
            if folder != keep:
                delete_tree(f"{self.prefix}{folder}/")
