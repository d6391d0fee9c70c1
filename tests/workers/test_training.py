"""Training jobs on a real Celery worker: success with artifacts in storage, actionable failures, cancel (queued
and running), the dataset gate, a SIGKILLed worker's job resumed from its last uploaded checkpoint, and the
stale-heartbeat sweep."""
import json
import time
from datetime import timedelta

import pytest
import torch
from django.core.files.storage import default_storage
from safetensors.torch import load
from django.utils import timezone

from jobs_helpers import classification_rows, completion_rows, make_job, stored_dataset, tiny_entry, wait_for

from webapp.jobs import live, queue, states
from webapp.jobs.models import Job
from webapp.teams.models import Team

pytestmark = pytest.mark.django_db(transaction=True)
LORA = {"rank": 4, "alpha": 8.0, "dropout": 0.0, "targets": "attention", "rslora": False}


def small(**changes) -> dict:
    return {"max_steps": 6, "batch_size": 4, "max_length": 64, "eval_fraction": 0.2, "lr": 1e-3,
            "checkpoint_every": 3, "lora": LORA, **changes}


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture
def team(db):
    return Team.objects.get_or_create(name="Trainers", slug="trainers")[0]


@pytest.fixture
def llama(tiny_dirs, db):
    return tiny_entry("llama", tiny_dirs / "llama")


def submit(job):
    queue.submit(job)  # outside a transaction: sent at once
    return job


def reload(job):
    return Job.objects.get(pk=job.pk)


def wait_state(job, *wanted, timeout_s=600, worker=None):
    """The job once in one of `wanted`. The limit only bounds a hang (a loaded 2-core machine runs these jobs
    several times slower than a quiet one)."""
    def done():
        current = reload(job)
        return current if current.state in wanted else None
    try:
        return wait_for(done, timeout_s, what=f"job {job.pk} to become {'/'.join(wanted)}")
    except AssertionError:
        current = reload(job)
        raise AssertionError(f"job is {current.state}: {current.error}\n{current.log_tail}\n"
                             + (worker.log()[-4000:] if worker else "")) from None


def checkpoint_pointer(job) -> dict | None:
    """This job's checkpoint pointer in storage (ids repeat across test databases: the owner tells them apart)."""
    name = f"jobs/{job.pk}/checkpoints/latest.json"
    if not default_storage.exists(name):
        return None
    with default_storage.open(name) as handle:
        pointer = json.load(handle)
    return pointer if pointer.get("job") == f"{job.pk}@{job.created_at.isoformat()}" else None


def test_a_causal_lm_job_trains_and_uploads_its_artifacts(celery_worker, team, llama):
    job = submit(make_job(team, llama, stored_dataset(team, completion_rows(), task="causal-lm"), settings=small()))
    job = wait_state(job, "succeeded", "failed", worker=celery_worker)
    assert job.state == "succeeded", job.error
    assert [(e.from_state, e.to_state) for e in job.events.all()] == [("", "queued"), ("queued", "running"),
                                                                       ("running", "succeeded")]
    assert job.progress["step"] == job.progress["total_steps"] == 6 and job.progress["tokens_per_s"] > 0
    assert [p["step"] for p in job.history if "loss" in p] == [1, 2, 3, 4, 5, 6]
    assert {p["stage"] for p in job.history if "eval" in p} == {"base", "final"}
    assert job.metrics["steps"] == 6 and job.metrics["trainable_params"] > 0
    assert job.artifacts == {"adapter": f"jobs/{job.pk}/adapter/", "merged": None,
                             "metrics": f"jobs/{job.pk}/metrics.json"}
    _, adapter_files = default_storage.listdir(job.artifacts["adapter"])
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(adapter_files)
    with default_storage.open(job.artifacts["metrics"]) as handle:
        assert json.load(handle)["steps"] == 6
    assert checkpoint_pointer(job)["checkpoint"] == "step-000006"
    assert job.started_at <= job.finished_at and job.worker_name == celery_worker.name
    assert "done" in job.log_tail and live.latest(job.pk)["step"] == 6


def test_a_classification_job_with_merge_uploads_the_merged_model(celery_worker, team, tiny_dirs):
    bert = tiny_entry("bert", tiny_dirs / "bert")
    dataset = stored_dataset(team, classification_rows(), task="classification")
    job = submit(make_job(team, bert, dataset, settings=small(merge=True, lora={**LORA, "targets": "attention"})))
    job = wait_state(job, "succeeded", "failed", worker=celery_worker)
    assert job.state == "succeeded", job.error
    assert job.artifacts["merged"] == f"jobs/{job.pk}/merged/"
    assert "config.json" in default_storage.listdir(job.artifacts["merged"])[1]
    assert job.metrics["final_eval"]["accuracy"] is not None and job.metrics["label_mapping"]


def test_a_job_whose_targets_match_nothing_fails_with_a_message_listing_the_layers(celery_worker, team, llama):
    dataset = stored_dataset(team, completion_rows(), task="causal-lm")
    job = submit(make_job(team, llama, dataset, settings=small(lora={**LORA, "targets": "re:nothing.*"})))
    job = wait_state(job, "failed", "succeeded", worker=celery_worker)
    assert job.state == "failed" and "q_proj" in job.error
    assert "failed:" in job.log_tail and job.finished_at is not None
    assert job.events.last().reason == job.error


def test_a_job_whose_dataset_file_is_gone_fails_saying_so(celery_worker, team, llama):
    dataset = stored_dataset(team, completion_rows(), task="causal-lm")
    default_storage.delete(dataset.file.name)
    job = wait_state(submit(make_job(team, llama, dataset, settings=small())), "failed", worker=celery_worker)
    assert "missing from storage" in job.error


def test_a_job_whose_base_model_is_unavailable_fails_saying_so_and_what_to_do(celery_worker, team, llama):
    from webapp.catalog.models import BaseModel

    gone = BaseModel.objects.create(name="not here", source="example-org/never-downloaded", status="ready",
                                    info=llama.info, model_type=llama.model_type)
    dataset = stored_dataset(team, completion_rows(), task="causal-lm")
    job = wait_state(submit(make_job(team, gone, dataset, settings=small())), "failed", "succeeded",
                     worker=celery_worker)
    assert job.state == "failed" and "unexpected error" not in job.error
    assert "'example-org/never-downloaded' is neither a local folder nor in the Hugging Face cache" in job.error
    assert "the hub is unreachable" in job.error and "Use a local model folder" in job.error
    assert f"failed: {job.error}" in job.log_tail and job.events.last().reason == job.error


def test_a_job_whose_rows_fit_no_format_fails_with_the_datas_message(celery_worker, team, llama):
    rows = [{"prompt": f"question {i}"} for i in range(20)]  # a dataset marked ready whose rows lack a completion
    dataset = stored_dataset(team, rows, task="causal-lm")
    job = wait_state(submit(make_job(team, llama, dataset, settings=small())), "failed", "succeeded",
                     worker=celery_worker)
    assert job.state == "failed" and "unexpected error" not in job.error
    assert "could not recognise the dataset format: the rows have the fields prompt" in job.error
    assert "prompt/completion" in job.error and "Rename the columns or give a column mapping" in job.error


def test_a_job_whose_rows_are_all_unusable_fails_with_the_datas_message(celery_worker, team, llama):
    rows = [{"prompt": f"question {i}", "completion": ""} for i in range(20)]  # nothing to learn in any row
    dataset = stored_dataset(team, rows, task="causal-lm")
    job = wait_state(submit(make_job(team, llama, dataset, settings=small())), "failed", "succeeded",
                     worker=celery_worker)
    assert job.state == "failed" and "unexpected error" not in job.error
    assert "no usable training examples are left after validation; run validate to see why" in job.error


def test_a_separate_eval_dataset_is_read_with_its_own_column_mapping(celery_worker, team, llama):
    train = stored_dataset(team, completion_rows(), task="causal-lm")
    held_out = [{"question": f"held-out question {i}", "answer": f"answer {i}"} for i in range(7)]
    evaluation = stored_dataset(team, held_out, task="causal-lm", name="held out",
                                column_mapping={"prompt": "question", "completion": "answer"})
    job = submit(make_job(team, llama, train, eval_dataset=evaluation, settings=small(max_steps=2)))
    job = wait_state(job, "succeeded", "failed", worker=celery_worker)
    assert job.state == "succeeded", job.error
    data = job.metrics["data"]
    assert data["eval_examples"] == 7 and data["eval_skipped_rows"] == 0
    assert data["train_examples"] == len(completion_rows())  # the whole training file: no split taken from it


def test_a_job_waits_for_its_datasets_validation_then_runs(celery_worker, team, llama):
    dataset = stored_dataset(team, completion_rows(), task="causal-lm", status="validating")
    job = submit(make_job(team, llama, dataset, state="validating", settings=small(max_steps=2)))
    time.sleep(4)
    assert reload(job).state == "validating"
    type(dataset).objects.filter(pk=dataset.pk).update(status="ready")
    job = wait_state(job, "succeeded", "failed", worker=celery_worker)
    assert [e.to_state for e in job.events.all()] == ["validating", "queued", "running", "succeeded"]


def test_a_job_whose_dataset_turns_out_invalid_fails_saying_so(celery_worker, team, llama):
    dataset = stored_dataset(team, completion_rows(), task="causal-lm", status="invalid",
                             error="row 3: missing field completion")
    job = submit(make_job(team, llama, dataset, state="validating", settings=small()))
    job = wait_state(job, "failed", worker=celery_worker)
    assert "is invalid: row 3: missing field completion" in job.error


def test_cancelling_a_running_job_stops_it_at_a_step_and_keeps_a_checkpoint(celery_worker, team, llama):
    dataset = stored_dataset(team, completion_rows(), task="causal-lm")
    job = submit(make_job(team, llama, dataset, settings=small(max_steps=100000, checkpoint_every=1000)))
    wait_for(lambda: (live.latest(job.pk) or {}).get("step", 0) >= 3, 180, what="three steps")
    assert queue.cancel(reload(job), "alice") == "stopping"
    job = wait_state(job, "cancelled", "failed", "succeeded", worker=celery_worker)
    assert job.state == "cancelled" and job.events.last().reason == "cancelled while running"
    stopped_at = job.progress["step"]
    assert 3 <= stopped_at < 100000
    assert checkpoint_pointer(job)["checkpoint"] == f"step-{stopped_at:06d}"
    assert "stopped at step" in job.log_tail
    # The adapter it keeps is that checkpoint's weights: every LoRA tensor equals one in trainable.safetensors.
    assert (job.kept_step, job.has_adapter, job.artifacts["merged"]) == (stopped_at, True, None)
    with default_storage.open(f"{job.artifacts['adapter']}adapter_model.safetensors") as handle:
        adapter = load(handle.read())
    with default_storage.open(f"jobs/{job.pk}/checkpoints/step-{stopped_at:06d}/trainable.safetensors") as handle:
        saved = list(load(handle.read()).values())
    assert adapter and all(any(t.shape == s.shape and torch.equal(t, s) for s in saved) for t in adapter.values())

    # Continued from that checkpoint: a new job starts from the kept adapter and trains to the end.
    continued = submit(make_job(team, llama, dataset, settings=small(max_steps=2), start_from=job))
    continued = wait_state(continued, "succeeded", "failed", worker=celery_worker)
    assert continued.state == "succeeded", continued.error
    assert "continuing from the adapter" in continued.log_tail


def test_cancelling_a_queued_job_takes_it_off_the_queue(celery_worker, team, llama):
    from workers.health_tasks import health

    dataset = stored_dataset(team, completion_rows(), task="causal-lm")
    # A task through the `train` queue first: the broker's routes are in place before the worker goes away.
    health.apply_async(queue="train").get(timeout=60)
    celery_worker.stop()
    try:
        first = submit(make_job(team, llama, dataset, settings=small(max_steps=2)))
        second = submit(make_job(team, llama, dataset, settings=small(max_steps=2)))
        assert (queue.queue_position(first), queue.queue_position(second)) == (1, 2)
        assert queue.cancel(first, "alice") == "cancelled"
        assert queue.queue_position(reload(second)) == 1
    finally:
        celery_worker.start()
    wait_state(second, "succeeded", worker=celery_worker)
    first = reload(first)
    assert first.state == "cancelled" and first.started_at is None
    assert [e.to_state for e in first.events.all()] == ["queued", "cancelled"]


def adapter_tensors(job) -> dict:
    from safetensors.torch import load

    with default_storage.open(f"jobs/{job.pk}/adapter/adapter_model.safetensors") as handle:
        return load(handle.read())


# The two ways a job whose worker was SIGKILLed is resumed, each tried with the other disabled:
RESUME_BY = {
    # Celery hands the unacknowledged task out again once it is older than the visibility timeout (10 s); the
    # sweep is off (with a 1 h heartbeat timeout its first look would be 15 min away).
    "redelivery": {"CELERY_VISIBILITY_TIMEOUT": "10", "JOB_HEARTBEAT_TIMEOUT_S": "3600"},
    # The workers' sweep, on the real clock, sends a job silent for 15 s again as a new task; redelivery is off
    # (a 1 h visibility timeout).
    "sweep": {"CELERY_VISIBILITY_TIMEOUT": "3600", "JOB_HEARTBEAT_TIMEOUT_S": "15"},
}


@pytest.mark.slow
@pytest.mark.parametrize("mechanism", list(RESUME_BY))
def test_a_job_on_a_sigkilled_worker_resumes_from_its_last_checkpoint_and_ends_as_an_uninterrupted_run(
        celery_worker, team, llama, mechanism):
    import torch

    dataset = stored_dataset(team, completion_rows(96), task="causal-lm")
    settings = small(max_steps=300, checkpoint_every=5, lora={**LORA, "dropout": 0.1})  # dropout: RNG state resumes too
    job = submit(make_job(team, llama, dataset, settings=settings))
    wait_for(lambda: (checkpoint_pointer(job) or {}).get("checkpoint", "") >= "step-000010", 300,
             what="a checkpoint in storage")
    original_env = dict(celery_worker.env)
    celery_worker.kill()
    try:
        killed = reload(job)
        saved_step = int(checkpoint_pointer(job)["checkpoint"].split("-")[1])
        assert killed.state == "running" and 10 <= saved_step < 300
        first_task_id = killed.celery_task_id
        log_before = len(celery_worker.log())
        celery_worker.env.update(RESUME_BY[mechanism])
        if mechanism == "redelivery":
            time.sleep(11)  # the killed delivery is now older than the 10 s visibility timeout
        celery_worker.start()
        job = wait_state(job, "succeeded", "failed", worker=celery_worker)
        log = celery_worker.log()[log_before:]
    finally:
        celery_worker.stop()
        celery_worker.env = original_env
        celery_worker.start()
    assert job.state == "succeeded", job.error
    resumed = job.events.filter(from_state="running", to_state="running")
    assert resumed.count() == 1 and "after its worker was lost" in resumed.first().reason
    # Which mechanism resumed it: a redelivery runs the killed task's own message again; the sweep sends a new one
    # and logs it.
    swept = f"'resumed': [{job.pk}]" in log
    if mechanism == "redelivery":
        assert job.celery_task_id == first_task_id and not swept
    else:
        assert job.celery_task_id != first_task_id and swept
    assert f"resuming from the checkpoint at step {saved_step}" in job.log_tail
    assert f"resumed from step-{saved_step:06d}" in job.log_tail
    steps = [p["step"] for p in job.history if "loss" in p]
    assert steps == list(range(1, 301))  # every step once: none lost, none repeated
    if mechanism == "sweep":
        return  # the resumed run's weights are compared once, below

    straight = submit(make_job(team, llama, dataset, name="uninterrupted", settings=settings))
    straight = wait_state(straight, "succeeded", "failed", worker=celery_worker)
    assert straight.state == "succeeded", straight.error
    ours, reference = adapter_tensors(job), adapter_tensors(straight)
    assert ours.keys() == reference.keys() and ours
    for name, tensor in reference.items():
        torch.testing.assert_close(ours[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    assert job.metrics["final_eval"]["eval_loss"] == pytest.approx(straight.metrics["final_eval"]["eval_loss"], rel=1e-5)


def test_the_sweep_resumes_a_silent_job_and_fails_one_already_resumed_too_often(celery_worker, team, llama):
    from webapp.jobs import conf
    from workers.stale_job_tasks import sweep_stale_jobs

    dataset = stored_dataset(team, completion_rows(), task="causal-lm")
    now = timezone.now()
    silent = make_job(team, llama, dataset, state="running", heartbeat_at=now, worker_name="lost@host",
                      settings=small(max_steps=3))
    hopeless = make_job(team, llama, dataset, state="running", heartbeat_at=now, worker_name="lost@host")
    for _ in range(conf.MAX_RESUMES):
        states.move(hopeless, states.RUNNING, reason="resumed after its worker was lost")
    Job.objects.filter(pk=hopeless.pk).update(heartbeat_at=now)
    fresh = make_job(team, llama, dataset, state="running")
    Job.objects.filter(pk=fresh.pk).update(heartbeat_at=now + timedelta(seconds=conf.HEARTBEAT_TIMEOUT_S))

    # Judged from the future, so the real worker's own sweep (judging from now) leaves these rows to this one.
    later = now + timedelta(seconds=conf.HEARTBEAT_TIMEOUT_S + 5)
    assert sweep_stale_jobs(now=later) == {"resumed": [silent.pk], "failed": [hopeless.pk]}
    hopeless = reload(hopeless)
    assert hopeless.state == "failed" and "stopped sending heartbeats" in hopeless.error
    assert "lower batch size" in hopeless.error
    assert reload(fresh).state == "running"
    silent = wait_state(silent, "succeeded", "failed", worker=celery_worker)
    assert silent.state == "succeeded", silent.error
    assert "after its worker was lost" in silent.events.get(from_state="running", to_state="running").reason
    assert sweep_stale_jobs(now=later) == {"resumed": [], "failed": []}
    states.move(fresh, states.CANCELLED, reason="end of test")  # nobody runs it: keep the real sweep away


# --- a task message lost by the broker ---------------------------------------------------------------------------

def drop_from_broker(task_id: str, queue_name: str) -> int:
    """Delete the task's message from the broker's Redis list of `queue_name`, as a Redis restart without persistence
    loses it; how many were deleted."""
    from workers.celery_app import app
    from workers.stale_job_tasks import priority_lists

    with app.connection_for_write() as broker:
        client = broker.default_channel.client
        return sum(client.lrem(listed, 0, raw) for listed in priority_lists(broker.default_channel, queue_name)
                   for raw in client.lrange(listed, 0, -1) if json.loads(raw)["headers"]["id"] == task_id)


def test_a_queued_job_whose_message_the_broker_lost_runs_once_the_sweep_sends_it_again(celery_worker, team, llama):
    from webapp.jobs import conf
    from workers.health_tasks import health
    from workers.stale_job_tasks import resend_lost_tasks, task_ids_in_broker

    dataset = stored_dataset(team, completion_rows(), task="causal-lm")
    health.apply_async(queue="train").get(timeout=60)  # the broker's routes are in place before the worker goes
    later = timezone.now() + timedelta(seconds=conf.REQUEUE_AFTER_S + 5)
    celery_worker.stop()
    try:
        job = reload(submit(make_job(team, llama, dataset, settings=small(max_steps=2))))
        assert job.celery_task_id in task_ids_in_broker({"train"})
        assert resend_lost_tasks(now=later) == []  # its message is waiting: nothing to send
        assert drop_from_broker(job.celery_task_id, "train") == 1
        assert job.celery_task_id not in task_ids_in_broker({"train"})
        assert resend_lost_tasks(now=timezone.now()) == []  # not waiting long enough yet
        assert resend_lost_tasks(now=later) == [job.pk]
        assert job.celery_task_id in task_ids_in_broker({"train"})
    finally:
        celery_worker.start()
    job = wait_state(job, "succeeded", "failed", worker=celery_worker)
    assert job.state == "succeeded", job.error
    assert [(e.from_state, e.to_state) for e in job.events.all()] == [("", "queued"), ("queued", "running"),
                                                                       ("running", "succeeded")]


def test_a_second_delivery_of_a_jobs_task_finds_nothing_to_do_and_the_job_runs_once(celery_worker, team, llama):
    from workers.celery_app import app

    dataset = stored_dataset(team, completion_rows(), task="causal-lm")
    job = reload(submit(make_job(team, llama, dataset, settings=small(max_steps=4))))
    queue.send(job.pk, job.celery_task_id)  # what a sweep that missed a message in flight would send
    job = wait_state(job, "succeeded", "failed", worker=celery_worker)
    wait_for(lambda: (app.control.inspect([celery_worker.name], timeout=1).active() or {}).get(celery_worker.name)
             == [], 90, what="both deliveries to end")
    assert job.state == "succeeded", job.error
    assert [(e.from_state, e.to_state) for e in job.events.all()] == [("", "queued"), ("queued", "running"),
                                                                       ("running", "succeeded")]
    assert [p["step"] for p in job.history if "loss" in p] == [1, 2, 3, 4]
    endings = [line for line in celery_worker.log().splitlines() if f"[{job.celery_task_id}] succeeded" in line]
    assert len(endings) == 2 and sum(("'nothing to do'" in line or "'duplicate delivery" in line)
                                     for line in endings) == 1, endings


def test_a_job_created_while_the_broker_is_down_is_queued_and_the_sweep_sends_it_later(
        celery_worker, member_client, team_a, llama):
    from test_faults import celery_broker

    from webapp.jobs import conf
    from workers.stale_job_tasks import resend_lost_tasks

    dataset = stored_dataset(team_a, completion_rows(), task="causal-lm")
    form = {"name": "while the broker is down", "base_model": llama.pk, "dataset": dataset.pk, "task": "",
            "rank": 4, "alpha": 8, "dropout": 0, "targets": "attention", "custom_targets": "", "epochs": 1,
            "max_steps": 2, "lr": 1e-3, "batch_size": 4, "grad_accum": 1, "max_length": 64, "warmup": 0,
            "eval_fraction": 0.2, "seed": 0}
    with celery_broker("redis://127.0.0.1:1/0"):  # nothing listens on port 1
        response = member_client.post("/jobs/new/", form)
    assert response.status_code == 302, response.content[:500]
    job = Job.objects.get(name="while the broker is down")
    assert job.state == "queued" and "the job queue could not be reached" in job.log_tail
    assert "could not be reached" in member_client.get(response.url).content.decode()
    assert resend_lost_tasks(now=timezone.now() + timedelta(seconds=conf.REQUEUE_AFTER_S + 5)) == [job.pk]
    job = wait_state(job, "succeeded", "failed", worker=celery_worker)
    assert job.state == "succeeded", job.error
