"""The path a new user walks, in a real browser against a live server, a real Celery worker and Redis: sign in,
upload a sample dataset, read its validation report, create a job, watch it train to the end, read its results,
download the adapter (PEFT loads it) and ask the playground. One test per task: classification, then causal LM
with the answer streaming in. Base models are the built-in demo models a fresh install lists (the pretrained
MiniLM-L6 encoder and the tiny demo LM), trained on this machine's CPU with settings that suit them."""
import json
import re
import zipfile

import pytest
import torch

from webapp.jobs.models import Job

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# One epoch over the ticket sample is enough for MiniLM to route tickets well; the demo LM takes a few steps.
CLASSIFIER_TRAINING = {"epochs": "1", "max_steps": "", "batch_size": "16", "max_length": "64",
                       "eval_fraction": "0.1", "lr": "0.003", "rank": "8", "alpha": "16"}
LM_TRAINING = {"max_steps": "12", "batch_size": "8", "max_length": "128", "eval_fraction": "0.1", "lr": "0.002",
               "rank": "4", "alpha": "8"}


def upload_sample(page, shoot, sample: str, folder) -> None:
    from trainer.samples import write_sample

    page.goto("/datasets/upload/")
    page.set_input_files("#id_file", str(write_sample(sample, folder)))
    page.fill("#id_name", f"{sample} sample")
    shoot(page, "upload")
    with page.expect_navigation(url="**/datasets/*/"):
        page.click("#upload-form button[type=submit]")
    page.wait_for_selector("#dataset-status.ready", timeout=120_000)  # the page follows its validation itself
    shoot(page, "dataset-report")


def create_job(page, shoot, model_label: str, name: str, training: dict) -> Job:
    page.goto("/jobs/new/")
    page.fill("#id_name", name)
    page.select_option("#id_base_model", label=model_label)
    for field, value in training.items():
        page.fill(f"#id_{field}", value)
    page.wait_for_function("document.querySelector('#estimate').innerText.includes('%')")
    shoot(page, "new-job")
    with page.expect_navigation(url="**/jobs/*/"):
        page.click("#job-form button[type=submit]")
    return Job.objects.get(name=name)


def watch_to_the_end(page, shoot) -> list[str]:
    """Stay on the job page (no reload by the test) until it says succeeded; returns the bar's widths seen."""
    widths = []
    page.expose_function("reportWidth", lambda width: widths.append(width))
    page.evaluate("""() => {
        const bar = document.querySelector('[data-live="bar"]');
        window.reportWidth(bar.style.width);
        new MutationObserver(() => window.reportWidth(bar.style.width)).observe(bar, {attributes: true});
    }""")
    page.wait_for_function("document.querySelector('[data-live=state]').textContent.trim() === 'succeeded'"
                           " || document.querySelector('[data-live=state]').textContent.trim() === 'failed'",
                           timeout=300_000)
    shoot(page, "job-done")
    return widths


def assert_the_bar_moved(widths: list[str], job: Job) -> None:
    """The bar showed a width strictly between 0 and 100 % while the job ran, and ended at 100 %. Only a run too
    quick for the page to draw a step (under 2 s of training) may skip the middle; it must then have recorded the
    progress of every step, which is what the page draws from."""
    assert widths and widths[-1] == "100%", widths
    if any(0 < float(width.rstrip("%")) < 100 for width in widths):
        return
    ran_s = (job.finished_at - job.started_at).total_seconds()
    assert ran_s < 2, f"the bar went {widths} over a {ran_s:.1f} s run: it never showed progress in between"
    assert [p["step"] for p in job.history if "loss" in p] == list(range(1, job.progress["total_steps"] + 1))


def read_results(page, shoot, job: Job) -> dict:
    """The results page agrees with the metrics.json it offers for download; returns that metrics.json."""
    page.goto(f"/jobs/{job.pk}/results/")
    shoot(page, "results")
    metrics = page.request.get(f"/jobs/{job.pk}/download/metrics/").json()
    assert metrics == job.metrics
    savings = page.inner_text("#savings")
    assert f"×{metrics['base_model_bytes'] / metrics['adapter_bytes']:.0f} smaller" in savings
    assert f"{metrics['trainable_percent']:.3f}".rstrip("0").rstrip(".") in savings
    return metrics


def eval_row(page, label: str) -> tuple[str, str]:
    cells = page.locator("#eval table.eval tr", has_text=label).first.locator("td.num")
    return cells.nth(0).inner_text(), cells.nth(1).inner_text()


def download_adapter(page, tmp_path):
    with page.expect_download() as download:
        page.click("#downloads a[href$='/download/adapter/']")
    archive = tmp_path / "adapter.zip"
    download.value.save_as(archive)
    zipfile.ZipFile(archive).extractall(tmp_path / "adapter")
    return next((tmp_path / "adapter").iterdir())


def ask_playground(page, job: Job, prompt: str, max_new_tokens: int = 16) -> None:
    page.goto("/playground/")
    page.select_option("#id_job", str(job.pk))
    page.fill("#id_prompt", prompt)
    if page.is_visible("#id_max_new_tokens"):
        page.fill("#id_max_new_tokens", str(max_new_tokens))
    page.click("#playground button[type=submit]")
    page.wait_for_function("document.querySelector('[data-status]').textContent.startsWith('Done')"
                           " || document.querySelector('[data-status]').textContent.startsWith('Error')",
                           timeout=120_000)
    assert page.inner_text("[data-status]").startswith("Done"), page.inner_text("[data-status]")


def test_a_new_user_trains_a_classifier_from_the_sample_and_uses_it(signed_in, shoot, demo_models, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from trainer.inference import load_for_inference
    from trainer.models import resolve_model_path

    base = demo_models["demo/minilm-l6"]
    page = signed_in("nora", "Team Nora")
    shoot(page, "dashboard")
    upload_sample(page, shoot, "support-tickets", tmp_path / "sample")
    report = page.inner_text("main")
    assert "600" in report and "classification" in report

    job = create_job(page, shoot, f"{base.name} (demo)", "Ticket router", CLASSIFIER_TRAINING)
    widths = watch_to_the_end(page, shoot)
    job.refresh_from_db()
    assert job.state == "succeeded", job.error
    assert_the_bar_moved(widths, job)
    assert page.inner_text("[data-live=step]") == str(job.progress["total_steps"])

    metrics = read_results(page, shoot, job)
    before, after = eval_row(page, "Accuracy")
    assert before == f"{100 * metrics['base_eval']['accuracy']:.1f} %"
    assert after == f"{100 * metrics['final_eval']['accuracy']:.1f} %"
    assert metrics["final_eval"]["accuracy"] >= 0.85 > metrics["base_eval"]["accuracy"]  # the bar
    assert page.locator("table.matrix").count() == 2

    folder = download_adapter(page, tmp_path)
    ours, tokenizer = load_for_inference(base.source, adapter_dir=folder)
    id2label = ours.config.id2label
    assert sorted(id2label.values()) == ["account", "billing", "feature_request", "shipping", "technical"]
    # MiniLM is a bare encoder: its classification head is new, trained in full and saved with the adapter.
    theirs = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(
        resolve_model_path(base.source), num_labels=len(id2label), id2label=id2label), folder).eval()
    batch = tokenizer(["I was charged twice", "the app crashes on start"], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(ours(**batch).logits, theirs(**batch).logits, rtol=1e-5, atol=1e-5)

    ask_playground(page, job, "I was charged twice this month")
    shoot(page, "playground")
    for side in ("base", "tuned"):
        labels = page.locator(f'[data-side="{side}"] .prob').all_inner_texts()
        assert len(labels) == 5 and all(re.search(r"\d+\.\d %", text) for text in labels), labels


def test_a_new_user_trains_a_causal_lm_and_watches_its_answer_stream(signed_in, shoot, demo_models, tmp_path):
    base = demo_models["demo/tiny-lm"]
    page = signed_in("omar", "Team Omar")
    upload_sample(page, shoot, "instructions", tmp_path / "sample")
    assert "alpaca" in page.inner_text("main")

    job = create_job(page, shoot, f"{base.name} (demo)", "Instruction follower", LM_TRAINING)
    widths = watch_to_the_end(page, shoot)
    job.refresh_from_db()
    assert job.state == "succeeded", job.error
    assert_the_bar_moved(widths, job)

    metrics = read_results(page, shoot, job)
    before, after = eval_row(page, "Perplexity")
    assert float(before.replace(",", "")) == pytest.approx(metrics["base_eval"]["perplexity"], rel=0.01)
    assert float(after.replace(",", "")) == pytest.approx(metrics["final_eval"]["perplexity"], rel=0.01)
    config = json.loads((download_adapter(page, tmp_path) / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4

    pieces = {"base": 0, "tuned": 0}  # how many times each answer grew while streaming
    page.goto("/playground/")
    page.expose_function("grew", lambda side: pieces.__setitem__(side, pieces[side] + 1))
    page.evaluate("""() => document.querySelectorAll('[data-side]').forEach((el) =>
        new MutationObserver(() => el.textContent && window.grew(el.dataset.side))
            .observe(el, {childList: true, characterData: true, subtree: true}))""")
    page.select_option("#id_job", str(job.pk))
    page.fill("#id_prompt", "Add 2 and 3.")
    page.fill("#id_max_new_tokens", "24")
    page.fill("#id_temperature", "1")
    page.click("#playground button[type=submit]")
    page.wait_for_function("document.querySelector('[data-status]').textContent.startsWith('Done')"
                           " || document.querySelector('[data-status]').textContent.startsWith('Error')",
                           timeout=120_000)
    shoot(page, "playground")
    assert page.inner_text("[data-status]").startswith("Done"), page.inner_text("[data-status]")
    assert page.inner_text('[data-side="base"]') and page.inner_text('[data-side="tuned"]')
    assert pieces["tuned"] >= 3 and pieces["base"] >= 3, pieces  # tokens arrived one by one, not all at once

