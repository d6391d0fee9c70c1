"""A job that will not fit its worker class is refused at submit, on the page and through the API, with the fix
spelled out; the fix it names is accepted. Against a real worker serving `train.gpu-fit` that advertises 150 MB
(WORKER_MEMORY_MB) in its health answer; with no GPU here, the estimate is the CPU's (trainer.estimate)."""
import os

import pytest
from django.urls import reverse

from jobs_helpers import completion_rows, stored_dataset
from test_api_schema import api  # noqa: F401  (fixture)
from worker_process import WorkerProcess
from trainer.estimate import estimate, readable_bytes
from webapp.jobs import routing
from webapp.jobs.models import Job
from webapp.ops import checks
from webapp.teams.models import Team

CLASS = "gpu-fit"
MEMORY_MB = 150
# Tiny Llama at 64 x 256 tokens: about 0.22 GB at its peak; batch 32 (143 MB) fits, nf4 (bitsandbytes' runtime
# on a CPU) and checkpointing (two layers: one recomputed is nearly all) do not.
TOO_BIG = {"rank": 2, "batch_size": 64, "grad_accum": 1, "max_length": 256}


@pytest.fixture(scope="module")
def small_worker(celery_worker, tmp_path_factory):
    env = {**celery_worker.env, "WORKER_MEMORY_MB": str(MEMORY_MB)}
    worker = WorkerProcess(env, tmp_path_factory.mktemp("fit-worker") / "worker.log", queues=f"train.{CLASS}",
                           concurrency=1, name=f"{CLASS}-{os.getpid()}@localhost")
    yield worker.start()
    worker.stop()


@pytest.fixture
def dataset(db, make_member):
    make_member("alice", "Team A")
    return stored_dataset(Team.objects.get(name="Team A"), completion_rows(), task="causal-lm")


def expected_refusal(llama) -> str:
    def peak(batch_size):
        return estimate(llama.info, targets="attention", rank=2, task="causal-lm", batch_size=batch_size,
                        max_length=256, device="cpu")["memory"]["total"]
    capacity = MEMORY_MB * 2**20
    assert peak(64) > capacity >= peak(32)
    return (f"{CLASS}: this job needs about {readable_bytes(peak(64))} at its peak, more than the "
            f"{readable_bytes(capacity)} its worker offers: batch 32 with grad-accum 2 (about "
            f"{readable_bytes(peak(32))}).")


def form_data(model, dataset, **changes) -> dict:
    return {"name": "big", "base_model": model.pk, "dataset": dataset.pk, "task": "", "worker_class": CLASS,
            "alpha": 4, "dropout": 0, "targets": "attention", "custom_targets": "", "epochs": 1, "max_steps": 2,
            "lr": 1e-3, "warmup": 0, "eval_fraction": 0.1, "seed": 0, **TOO_BIG, **changes}


def test_a_worker_advertises_the_memory_it_offers_and_its_class_reports_it(small_worker):
    workers = checks.workers()
    offer = {"device": "cpu", "memory_bytes": MEMORY_MB * 2**20, "gpus": 1, "nodes": 1}  # one process a job
    assert workers[small_worker.name]["capacity"] == offer
    assert routing.class_capacity(workers, CLASS) == offer


def test_the_form_refuses_a_job_too_big_for_its_class_with_the_fix_and_accepts_the_fix(
        member_client, small_worker, llama, dataset):
    response = member_client.post(reverse("jobs:create"), form_data(llama, dataset))
    assert response.status_code == 200 and not Job.objects.exists()
    assert response.context["form"].errors["worker_class"] == [expected_refusal(llama)]

    fixed = member_client.post(reverse("jobs:create"), form_data(llama, dataset, batch_size=32, grad_accum=2))
    assert fixed.status_code == 302
    job = Job.objects.get()
    assert (job.worker_class, job.settings["batch_size"], job.settings["grad_accum"]) == (CLASS, 32, 2)


def test_the_api_refuses_it_the_same_way_naming_the_worker_class(api, small_worker, llama):
    dataset = stored_dataset(Team.objects.get(name="Team A"), completion_rows(), task="causal-lm")
    body = {"base_model": llama.pk, "dataset": dataset.pk, "worker_class": CLASS,
            "lora": {"rank": 2, "targets": "attention"},
            "training": {"batch_size": 64, "max_length": 256, "max_steps": 2}}
    refused = api("POST", "/api/jobs", json_body=body)
    assert refused.status_code == 400 and not Job.objects.exists()
    assert refused.json()["error"] == {**refused.json()["error"], "field": "worker_class",
                                       "message": f"worker_class: {expected_refusal(llama)}"}
    body["training"].update(batch_size=32, grad_accum=2)
    assert api("POST", "/api/jobs", json_body=body).status_code == 201
