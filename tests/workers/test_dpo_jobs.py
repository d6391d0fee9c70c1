"""A DPO job from the form to its results on a real Celery worker: the form refuses DPO on data without
preferences, the worker streams DPO's step figures and evals, and the pages show them, with the kept (best)
checkpoint marked and why training stopped."""
import pytest
from django.urls import reverse

from jobs_helpers import completion_rows, stored_dataset, tiny_entry, wait_for
from webapp.jobs.models import Job

pytestmark = pytest.mark.django_db(transaction=True)
# The preferred style is lower case; the rows differ in content, so the held-out split is new sentences.
ANSWERS = ["it is blue", "maybe a pear", "seven", "hello there", "a small cat", "wet and cold", "paris",
           "frozen water", "a hammer", "an oak", "see you soon", "green tea", "copper is one", "in the sea", "glad",
           "mars"]


def preference_rows():
    return [{"prompt": f"Question {i}:", "chosen": f" {answer}", "rejected": f" {answer.upper()}"}
            for i, answer in enumerate(ANSWERS)]


@pytest.fixture
def team(member_client):
    return member_client.user.teams.get()


@pytest.fixture
def llama(tmp_path_factory, db):
    return tiny_entry("llama", tmp_path_factory.mktemp("tiny-models") / "llama")


def form(model, dataset, **changes):
    return {"name": "prefer lower case", "base_model": model.pk, "dataset": dataset.pk, "task": "", "rank": 8,
            "alpha": 16, "dropout": 0.0, "targets": "attention+mlp", "custom_targets": "", "epochs": 1,
            "max_steps": 8, "lr": 3e-2, "batch_size": 4, "grad_accum": 1, "max_length": 64, "warmup": 0.03,
            "eval_fraction": 0.25, "seed": 0, "method": "dpo", "beta": 0.1, "rpo_alpha": 0.5, "eval_every": 4,
            "sample_answers": "on", "sample_prompts": "Question 20:\nQuestion 21:", **changes}


def test_the_form_refuses_dpo_on_a_dataset_without_preferences(member_client, team, llama, monkeypatch):
    monkeypatch.setattr("webapp.jobs.queue.submit", lambda job: None)
    plain = stored_dataset(team, completion_rows(), task="causal-lm")
    page = member_client.post(reverse("jobs:create"), form(llama, plain)).content.decode()
    assert "is a prompt_completion dataset; DPO needs preference rows" in page
    assert not Job.objects.exists()


def test_a_dpo_job_trains_on_the_worker_and_its_pages_show_the_preference_figures(celery_worker, member_client,
                                                                                   team, llama):
    dataset = stored_dataset(team, preference_rows(), task="causal-lm", format="preference")
    response = member_client.post(reverse("jobs:create"), form(llama, dataset))
    assert response.status_code == 302, response.content.decode()[:2000]
    job = Job.objects.get()
    assert job.settings["method"] == "dpo" and job.settings["beta"] == 0.1 and job.settings["rpo_alpha"] == 0.5
    job = wait_for(lambda: (j := Job.objects.get(pk=job.pk)).state in ("succeeded", "failed") and j, 180,
                   what="the DPO job to finish")
    assert job.state == "succeeded", f"{job.error}\n{celery_worker.log()[-3000:]}"
    steps = [point for point in job.history if "loss" in point]
    assert [point["step"] for point in steps] == list(range(1, 9))
    assert all({"reward_margin", "reward_accuracy", "chosen_logp", "rejected_logp"} <= set(p) for p in steps)
    base, final = job.metrics["base_eval"], job.metrics["final_eval"]
    assert final["preference_accuracy"] > base["preference_accuracy"] and final["reward_margin"] > 0
    evals = [point for point in job.history if "eval" in point]
    assert evals[-1]["eval"]["preference_accuracy"] == final["preference_accuracy"]

    detail = member_client.get(reverse("jobs:detail", args=[job.pk])).content.decode()
    assert 'id="dpo-reward-chart"' in detail and 'id="dpo-logp-chart"' in detail
    results = member_client.get(reverse("results:job", args=[job.pk])).content.decode()
    assert "Preference accuracy (chosen more likely)" in results and "preference pairs" in results
    assert job.metrics["config"]["rpo_alpha"] == 0.5 and "SFT weight (RPO alpha)" in results
    kept = job.metrics["kept_step"]
    assert job.metrics["keep"] == "best" and job.metrics["stop_reason"] == "completed" and kept in (4, 8)
    assert f"kept adapter (step {kept})" in results
    samples = job.metrics["samples"]
    assert samples["prompts"] == ["Question 20:", "Question 21:"]
    assert [c["step"] for c in samples["checkpoints"]] == [0, 4, 8]
    assert "Sample answers" in results and '<a href="?answers=4#answers">step 4</a>' in results
    at_4 = member_client.get(reverse("results:job", args=[job.pk]), {"answers": 4}).content.decode()
    assert "<th>Step 4</th>" in at_4 and '<a href="?answers=8#answers">step 8 (final)</a>' in at_4

    # Continue from it: a second DPO job starts from its adapter, and both job pages show the chain.
    member_client.post(reverse("jobs:create"), form(llama, dataset, name="round two", start_from=job.pk,
                                                    max_steps=2, eval_every=0, sample_answers=""))
    second = Job.objects.get(name="round two")
    assert second.start_from_id == job.pk
    second = wait_for(lambda: (j := Job.objects.get(pk=second.pk)).state in ("succeeded", "failed") and j, 180,
                      what="the continued job to finish")
    assert second.state == "succeeded", second.error
    assert "continuing from the adapter" in second.log_tail
    # it started where the first one ended: its step-0 eval is the first job's final eval
    assert abs(second.metrics["base_eval"]["eval_loss"] - job.metrics["final_eval"]["eval_loss"]) < 1e-5
    assert "Starts from the adapter of" in member_client.get(reverse("jobs:detail", args=[second.pk])).content.decode()
    assert "Continued by" in member_client.get(reverse("jobs:detail", args=[job.pk])).content.decode()
    assert (f"Trained every planned step (8 of 8). The adapter kept is step {kept}&#x27;s, the best eval loss of "
            "the run.") in results
