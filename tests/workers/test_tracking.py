"""Experiment tracking (workers.tracking) against a real `mlflow server` on loopback (SQLite backend store, artifacts
in a temporary folder) and real training jobs on a real Celery worker: the run read back through MlflowClient has
the job's params, one loss point a step (and a DPO job's reward figures), the evals, and the adapter's files; a
tracking server that is down fails no job; a resumed job continues its run; and without MLFLOW_TRACKING_URI nothing
imports mlflow."""
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from django.core.files.storage import default_storage

from jobs_helpers import completion_rows, make_job, stored_dataset, tiny_entry, wait_for
from test_dpo_jobs import preference_rows
from worker_process import ROOT, train_worker, wait_terminal

from trainer.reporter import NullReporter
from webapp.jobs import queue
from webapp.localrun import free_loopback_port
from webapp.teams.models import Team

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
LORA = {"rank": 4, "alpha": 8.0, "dropout": 0.0, "targets": "attention", "rslora": False}
SETTINGS = {"max_steps": 6, "batch_size": 4, "max_length": 64, "eval_fraction": 0.2, "lr": 1e-3, "eval_every": 3,
            "checkpoint_every": 1000, "lora": LORA}


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on a free loopback port; its URL once /health answers."""
    folder = tmp_path_factory.mktemp("mlflow")
    port = free_loopback_port()
    # The server's background job runner (a dozen huey consumers) serves features these tests do not use.
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    log = open(folder / "server.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--artifacts-destination", str(folder / "artifacts")],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        # The limit only bounds a hang: a loaded 2-core machine takes most of a minute to start it.
        wait_for(lambda: server.poll() is not None or answers(f"{url}/health"), 300, every_s=0.5,
                 what="mlflow server to answer")
        if server.poll() is not None:
            pytest.fail(f"mlflow server exited: {(folder / 'server.log').read_text()[-3000:]}")
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


@pytest.fixture
def team(db):
    return Team.objects.get_or_create(name="Trackers", slug="trackers")[0]


@pytest.fixture
def llama(tmp_path_factory, db):
    return tiny_entry("llama", tmp_path_factory.getbasetemp() / "tracking-llama")


def test_a_job_is_an_mlflow_run_with_its_params_step_metrics_evals_and_adapter(
        mlflow_server, session_worker_paused, celery_worker, team, llama, tmp_path):
    from mlflow.tracking import MlflowClient

    dataset = stored_dataset(team, completion_rows(), task="causal-lm")
    job = make_job(team, llama, dataset, settings=SETTINGS)
    dpo = make_job(team, llama, stored_dataset(team, preference_rows(), task="causal-lm", format="preference"),
                   settings={**SETTINGS, "max_steps": 4, "eval_every": 0, "lr": 3e-2, "method": "dpo", "beta": 0.1})
    with train_worker(celery_worker, tmp_path / "tracked-worker.log", MLFLOW_TRACKING_URI=mlflow_server,
                      MLFLOW_EXPERIMENT_NAME="loraworks-tests") as worker:
        queue.submit(job)
        queue.submit(dpo)
        job, dpo = wait_terminal(job, worker), wait_terminal(dpo, worker)
    assert job.state == dpo.state == "succeeded", job.error + dpo.error
    assert "experiment tracking" not in job.log_tail + dpo.log_tail  # no warning: every call went through

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("loraworks-tests")
    (run,) = client.search_runs([experiment.experiment_id], f"tags.job_id = '{job.pk}'")
    assert run.info.run_name == f"job-{job.pk}" and run.info.status == "FINISHED"
    assert run.data.tags["team"] == "Trackers"

    expected = {"base_model": llama.source, "task": "causal-lm", "dataset": str(dataset.pk), "eval_dataset": "None",
                "start_from": "None", **{f"lora.{name}": str(value) for name, value in LORA.items()},
                **{name: str(value) for name, value in SETTINGS.items() if name != "lora"}}
    assert run.data.params == expected

    history = job.metrics["history"]  # metrics.json: every step
    losses = client.get_metric_history(run.info.run_id, "loss")
    assert job.metrics["steps"] == 6
    assert [(m.step, m.value) for m in losses] == [(point["step"], point["loss"]) for point in history]
    assert [m.value for m in client.get_metric_history(run.info.run_id, "lr")] == [point["lr"] for point in history]
    assert len(client.get_metric_history(run.info.run_id, "tokens_per_s")) == 6
    evals = client.get_metric_history(run.info.run_id, "eval/loss")
    assert [(m.step, m.value) for m in evals] == [(0, job.metrics["base_eval"]["eval_loss"]),
                                                  (3, job.metrics["eval_history"][0]["eval_loss"]),
                                                  (6, job.metrics["final_eval"]["eval_loss"])]

    listed = {item.path for item in client.list_artifacts(run.info.run_id, "adapter")}
    assert {"adapter/adapter_config.json", "adapter/adapter_model.safetensors"} <= listed
    assert "metrics.json" in {item.path for item in client.list_artifacts(run.info.run_id)}
    fetched = Path(client.download_artifacts(run.info.run_id, "adapter/adapter_model.safetensors", str(tmp_path)))
    with default_storage.open(f"{job.artifacts['adapter']}adapter_model.safetensors") as stored:
        assert fetched.read_bytes() == stored.read()  # the very adapter the job offers for download

    (dpo_run,) = client.search_runs([experiment.experiment_id], f"tags.job_id = '{dpo.pk}'")
    assert dpo_run.data.params["method"] == "dpo" and dpo_run.data.params["beta"] == "0.1"
    for figure in ("loss", "reward_margin", "reward_accuracy", "chosen_logp", "rejected_logp"):
        logged = client.get_metric_history(dpo_run.info.run_id, figure)
        assert [(m.step, m.value) for m in logged] == [(p["step"], p[figure]) for p in dpo.metrics["history"]]
    accuracy = client.get_metric_history(dpo_run.info.run_id, "eval/preference_accuracy")
    assert [(m.step, m.value) for m in accuracy] == [(0, dpo.metrics["base_eval"]["preference_accuracy"]),
                                                     (4, dpo.metrics["final_eval"]["preference_accuracy"])]


def test_a_tracking_server_that_is_down_fails_no_job_and_says_so_in_its_log(
        session_worker_paused, celery_worker, team, llama, tmp_path):
    nowhere = f"http://127.0.0.1:{free_loopback_port()}"  # nothing listens there
    job = make_job(team, llama, stored_dataset(team, completion_rows(), task="causal-lm"),
                   settings={**SETTINGS, "eval_every": 0})
    with train_worker(celery_worker, tmp_path / "untracked-worker.log", MLFLOW_TRACKING_URI=nowhere) as worker:
        queue.submit(job)
        job = wait_terminal(job, worker)
        worker_log = worker.log()
    assert job.state == "succeeded", job.error
    assert job.metrics["steps"] == 6 and default_storage.exists(f"{job.artifacts['adapter']}adapter_model.safetensors")
    said = f"experiment tracking: starting the run failed at MLflow ({nowhere})"
    assert said in job.log_tail and "this job goes on without tracking" in job.log_tail
    assert "WARNING" in worker_log and said in worker_log


def test_without_a_tracking_uri_nothing_is_tracked_and_mlflow_is_not_imported():
    check = ("import django, sys; django.setup(); from workers import tracking, training_tasks; "
             "tracker = tracking.start(None, resuming=False, warn=print); "
             "reporter = object(); assert tracker.tee(reporter) is reporter; tracker.end('succeeded', None); "
             "print(type(tracker).__name__, 'mlflow' in sys.modules)")
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    done = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=dict(env, DJANGO_SETTINGS_MODULE="webapp.settings"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["Tracker", "False"]


def test_a_job_resumed_after_a_lost_worker_continues_its_run(mlflow_server, team, llama, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from workers import tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "loraworks-resume-tests")
    for name, value in tracking.HTTP_DEFAULTS.items():  # set by start(): undone with the rest after the test
        monkeypatch.setenv(name, value)
    job = make_job(team, llama, stored_dataset(team, completion_rows(), task="causal-lm"), settings=SETTINGS)
    warnings = []
    first = tracking.start(job, resuming=False, warn=warnings.append)
    first.tee(NullReporter()).on_step(1, 6, 2.5, 1e-3, 100.0, 5.0)
    first.flush(now=True)  # then the worker is lost: its run is never ended
    second = tracking.start(job, resuming=True, warn=warnings.append)
    second.tee(NullReporter()).on_step(2, 6, 2.0, 1e-3, 100.0, 4.0)
    second.end("failed", tmp_path)
    assert warnings == [] and second.run_id == first.run_id

    client = MlflowClient(mlflow_server)
    (run,) = client.search_runs([client.get_experiment_by_name("loraworks-resume-tests").experiment_id],
                                f"tags.job_id = '{job.pk}'")
    assert run.info.status == "FAILED"
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss")] == [(1, 2.5), (2, 2.0)]
