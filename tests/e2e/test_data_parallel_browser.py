"""A data-parallel job through the browser: with a worker of class two-gpus declared with WORKER_GPUS=2 (on this CPU,
2 gloo processes of one thread), a person picks that class on the new job form (it says 2 GPUs a job), submits,
and watches the job page to `succeeded`; the page says it ran on 2 processes, and its adapter matches the same job
trained in one process with twice the batch."""
import pytest

from data_parallel_checks import CLASS, adapter_of, assert_same_adapter, one_process_adapter, two_gpu_worker
from browser_steps import watch_to_the_end
from jobs_helpers import completion_rows, stored_dataset, tiny_entry

from webapp.jobs.models import Job
from webapp.teams.models import Team

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.django_db(transaction=True)]
TRAINING = {"max_steps": "6", "batch_size": "4", "lr": "0.01", "dropout": "0", "rank": "4", "alpha": "8",
            "max_length": "64", "eval_fraction": "0.2"}


@pytest.fixture
def worker(celery_worker, tmp_path):
    started = two_gpu_worker(celery_worker.env, tmp_path / "two-gpu-worker.log")
    yield started
    started.stop()


def test_a_job_on_a_two_gpu_class_trains_through_the_browser_like_one_process(signed_in, shoot, worker, tmp_path):
    page = signed_in("dara", "Parallel team")
    team = Team.objects.get(name="Parallel team")
    tiny_entry("llama", tmp_path / "models")
    dataset = stored_dataset(team, completion_rows(), task="causal-lm", name="say twice")

    page.goto("/jobs/new/")
    page.fill("#id_name", "two processes")
    page.select_option("#id_base_model", label="tiny llama")
    page.select_option("#id_dataset", value=str(dataset.pk))
    assert page.locator(f"#id_worker_class option[value={CLASS}]").inner_text() == f"{CLASS} (2 GPUs a job)"
    page.select_option("#id_worker_class", value=CLASS)
    for field, value in TRAINING.items():
        page.fill(f"#id_{field}", value)
    page.wait_for_function("document.querySelector('#estimate').innerText.includes('%')")
    shoot(page, "new-job")
    with page.expect_navigation(url="**/jobs/*/"):
        page.click("#job-form button[type=submit]")
    watch_to_the_end(page, shoot)

    job = Job.objects.get(team=team, name="two processes")
    assert job.state == "succeeded", f"{job.error}\n{worker.log()[-4000:]}"
    page.reload()
    assert page.inner_text("#job-processes") == "2"
    assert worker.name in page.inner_text("#job-worker")
    assert job.metrics["processes"] == 2 and job.settings["batch_size"] == 4
    assert_same_adapter(adapter_of(job), one_process_adapter(job, tmp_path / "one-process"))
