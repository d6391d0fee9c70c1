"""Optional experiment tracking: with MLFLOW_TRACKING_URI set, each training job is also an MLflow run.

The run is named job-<id> and tagged `team` and `job_id`, in the experiment MLFLOW_EXPERIMENT_NAME (default
"loraworks"). It gets the job's settings as params (nested ones dotted: `lora.rank`), every step's figures as
metrics at that step (loss, lr, tokens_per_s; DPO's reward margin and accuracy, chosen/rejected log-probabilities),
each eval's scalars as `eval/<name>` (the base eval at step 0), and at the end the adapter folder and metrics.json
as artifacts. A job resumed after a lost worker continues its run (found by the `job_id` tag).

Tracking never fails a job: the first error from the tracking server (down, refusing, slow) is logged as a warning,
in the worker's log and the job's, and the job goes on untracked. Without the variable nothing here imports mlflow.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)
DEFAULT_EXPERIMENT = "loraworks"
FLUSH_EVERY_S = 5.0  # step metrics are sent in batches at most this often (and at each eval and the end)
BATCH_LIMIT = 100  # MLflow's log_batch takes at most 100 params (and 1,000 metrics) a call
PARAM_VALUE_LIMIT = 6000  # characters MLflow keeps of a param's value
# A down server must not hold a job up for MLflow's defaults (7 retries with doubling waits, 120 s timeouts);
# an administrator's own MLFLOW_HTTP_REQUEST_* settings win.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
END_STATUS = {"succeeded": "FINISHED", "cancelled": "KILLED"}  # any other outcome: FAILED


def job_params(job) -> dict[str, str]:
    """The job's settings and what it trains on, flat, as MLflow's string params."""
    flat = {"base_model": job.base_model.source, "task": job.task, "dataset": job.dataset_id,
            "eval_dataset": job.eval_dataset_id, "start_from": job.start_from_id}
    for name, value in job.settings.items():
        if isinstance(value, dict):
            flat.update({f"{name}.{key}": item for key, item in value.items()})
        else:
            flat[name] = value
    return {name: str(value)[:PARAM_VALUE_LIMIT] for name, value in flat.items()}


def start(job, *, resuming: bool, warn) -> "Tracker":
    """A Tracker logging `job` to MLflow, or one that does nothing (MLFLOW_TRACKING_URI unset, or the server
    unreachable: then `warn(message)` tells the job's log why)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if not uri:
        return Tracker()
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    tracker = MlflowTracker(uri, warn)
    tracker.guarded("starting the run", tracker.open, job, resuming)
    return tracker


class Tracker:
    """Tracking switched off: the reporter passes through and nothing is logged."""

    def tee(self, reporter):
        return reporter

    def end(self, outcome: str, out: Path) -> None:
        pass


class MlflowTracker(Tracker):
    """One job's MLflow run: opened by `start`, fed by TrackingReporter, closed by `end`."""

    def __init__(self, uri: str, warn):
        self.client = None
        self.uri, self.warn = uri, warn
        self.run_id: str | None = None
        self.pending: list = []
        self.last_flush = time.monotonic()
        self.step = 0

    def guarded(self, doing: str, action, *args) -> None:
        """Run `action(*args)`; on any error, warn once and stop tracking this job."""
        try:
            action(*args)
        except Exception as error:  # whatever the server or the network says, the job goes on
            message = (f"experiment tracking: {doing} failed at MLflow ({self.uri}): {type(error).__name__}: "
                       f"{str(error)[:300]}; this job goes on without tracking")
            log.warning(message)
            self.warn(message)
            self.run_id = None

    def open(self, job, resuming: bool) -> None:
        from mlflow.tracking import MlflowClient  # not installed: the warning names the missing module

        self.client = MlflowClient(tracking_uri=self.uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self._create_experiment(name)
        if resuming:
            found = self.client.search_runs([experiment_id], f"tags.job_id = '{job.pk}'", max_results=1,
                                            order_by=["attributes.start_time DESC"])
            if found:
                self.run_id = found[0].info.run_id
                self.client.update_run(self.run_id, status="RUNNING")
                return
        run = self.client.create_run(experiment_id, run_name=f"job-{job.pk}",
                                     tags={"team": job.team.name, "job_id": str(job.pk)})
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        params = [Param(name, value) for name, value in job_params(job).items()]
        for start in range(0, len(params), BATCH_LIMIT):
            self.client.log_batch(self.run_id, params=params[start:start + BATCH_LIMIT])

    def _create_experiment(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.create_experiment(name)
        except MlflowException:  # another worker created it in between
            return self.client.get_experiment_by_name(name).experiment_id

    def tee(self, reporter):
        return TrackingReporter(reporter, self)

    # --- metrics -----------------------------------------------------------------------------------------

    def add(self, figures: dict, step: int) -> None:
        from mlflow.entities import Metric

        if self.run_id is None:
            return
        stamp = int(time.time() * 1000)
        self.pending += [Metric(key, float(value), stamp, step) for key, value in figures.items()
                         if isinstance(value, (int, float)) and not isinstance(value, bool)]

    def flush(self, *, now: bool = False) -> None:
        if self.run_id is None or not self.pending:
            return
        if not now and time.monotonic() - self.last_flush < FLUSH_EVERY_S:
            return
        batch, self.pending = self.pending, []
        self.last_flush = time.monotonic()
        for start in range(0, len(batch), 1000):
            if self.run_id is not None:
                self.guarded("logging metrics", self.client.log_batch, self.run_id, batch[start:start + 1000])

    # --- the end -------------------------------------------------------------------------------------------

    def end(self, outcome: str, out: Path) -> None:
        self.flush(now=True)
        steps = [("uploading the adapter", self.client.log_artifacts, str(out / "adapter"), "adapter"),
                 ("uploading metrics.json", self.client.log_artifact, str(out / "metrics.json"))
                 ] if outcome == "succeeded" else []
        steps.append(("ending the run", self.client.set_terminated, END_STATUS.get(outcome, "FAILED")))
        for doing, action, *args in steps:
            if self.run_id is not None:
                self.guarded(doing, action, self.run_id, *args)


class TrackingReporter:
    """trainer's Reporter protocol: passes everything to `inner` (the job's own reporter) and copies the figures
    to the tracker."""

    def __init__(self, inner, tracker: MlflowTracker):
        self.inner, self.tracker = inner, tracker

    def on_step(self, step, total_steps, loss, lr, tokens_per_s, eta_s, metrics=None):
        self.inner.on_step(step, total_steps, loss, lr, tokens_per_s, eta_s, metrics)
        self.tracker.step = step
        self.tracker.add({"loss": loss, "lr": lr, "tokens_per_s": tokens_per_s, **(metrics or {})}, step)
        self.tracker.flush()

    def on_eval(self, metrics):
        self.inner.on_eval(metrics)
        step = 0 if metrics.get("stage") == "base" else metrics.get("step", self.tracker.step)
        figures = {f"eval/{key.removeprefix('eval_')}": value for key, value in metrics.items() if key != "step"}
        self.tracker.add(figures, step)
        self.tracker.flush(now=True)

    def on_log(self, message):
        self.inner.on_log(message)

    def should_stop(self):
        return self.inner.should_stop()
