"""The settings advisor in Chromium at 1400 px, with the demo MiniLM a fresh install lists and a real worker: the new
job form proposes settings with their reasons for a small hand-written topic set (tests/advice_samples.py, not a
built-in sample), proposes again when the model changes, and a job on those defaults, untouched, makes the
playground's answers clearly more confident and right on sentences the set does not hold. A run that barely moves
the model gets "What to try next" on its results page, naming the settings to change."""
import re

import pytest

from advice_samples import HELD_OUT_TEXTS, weather_news_recipe_rows, write_jsonl
from browser_steps import upload_file, watch_to_the_end
from test_classification_path import advised_form_values, ask_playground, create_job
from webapp.jobs.models import Job

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CONFIDENT = 0.8  # the tuned model's probability for the right topic
UNSURE = 0.6  # the base's untrained head is near 1/3 for three topics
# A run too small to change anything: two steps at a learning rate a thousand times too small.
BARELY = {"max_steps": "2", "lr": "0.000002"}


def as_numbers(values: dict[str, str]) -> dict:
    return {name: float(value) if re.fullmatch(r"[\d.e+-]+", value) else value for name, value in values.items()}


def top_label(page, side: str) -> tuple[str, float]:
    """The label the playground puts first on `side`, and its probability."""
    label, percent = re.match(r"\s*(\S+)\s.*?([\d.]+) %", page.locator(f'[data-side="{side}"] .prob.top').inner_text(),
                              re.S).groups()
    return label, float(percent) / 100


def test_advised_defaults_make_the_classifier_clearly_confident(signed_in, at_width, shoot, demo_models, tmp_path):
    minilm, tiny_lm = demo_models["demo/minilm-l6"], demo_models["demo/tiny-lm"]
    page = at_width(signed_in("ada", "Team Ada"), "desktop")
    upload_file(page, shoot, write_jsonl(weather_news_recipe_rows(), tmp_path / "topics.jsonl"), "topics")

    page.goto("/jobs/new/")
    assert page.inner_text("#id_base_model option:checked").startswith(minilm.name)
    proposed = advised_form_values(page)
    assert page.inner_text('[data-advice-for="epochs"]').startswith(f"Advised: {int(float(proposed['epochs'])) * 11}"
                                                                     " steps")  # 81 training rows, batch 8
    shoot(page, "advised-form")
    # The tiny LM's 2,048-token vocabulary needs more tokens for the same text: a longer max length is proposed.
    page.select_option("#id_base_model", label=f"{tiny_lm.name} (demo)")
    page.wait_for_selector('#job-form[data-advised="1"]', state="attached")
    assert int(page.input_value("#id_max_length")) > int(proposed["max_length"])
    page.select_option("#id_base_model", label=f"{minilm.name} (demo)")
    page.wait_for_selector('#job-form[data-advised="2"]', state="attached")
    assert as_numbers(advised_form_values(page)) == as_numbers(proposed)  # "32.0" as rendered, "32" as set

    job = create_job(page, shoot, f"{minilm.name} (demo)", "Topics, advised", {})
    watch_to_the_end(page, shoot)
    job.refresh_from_db()
    assert job.state == "succeeded", job.error
    page.goto(f"/jobs/{job.pk}/results/")
    assert page.locator("#next-steps").count() == 0  # a clear improvement: nothing to suggest
    for topic, text in HELD_OUT_TEXTS.items():
        ask_playground(page, job, text)
        (tuned, tuned_p), (_, base_p) = top_label(page, "tuned"), top_label(page, "base")
        assert tuned == topic and tuned_p >= CONFIDENT and base_p < UNSURE, (text, tuned, tuned_p, base_p)
    shoot(page, "confident-playground")


def test_a_run_that_barely_moved_suggests_what_to_change(signed_in, at_width, shoot, demo_models, tmp_path):
    minilm = demo_models["demo/minilm-l6"]
    page = at_width(signed_in("bo", "Team Bo"), "desktop")
    upload_file(page, shoot, write_jsonl(weather_news_recipe_rows(), tmp_path / "topics.jsonl"), "topics")
    job = create_job(page, shoot, f"{minilm.name} (demo)", "Topics, too little", BARELY)
    watch_to_the_end(page, shoot)
    job = Job.objects.get(pk=job.pk)
    assert job.state == "succeeded", job.error
    before, after = job.metrics["base_eval"]["accuracy"], job.metrics["final_eval"]["accuracy"]
    assert after - before < 0.05  # the premise: this run changed little

    page.goto(f"/jobs/{job.pk}/results/")
    finding = page.inner_text("#next-steps-finding")
    assert finding == f"Accuracy moved from {before:.0%} to {after:.0%} only."
    tips = page.locator("#next-steps li").all_inner_texts()
    assert tips[:2] == ["Train longer: max steps 2 → 4 (or clear it and set epochs).",
                        "Take larger steps: learning rate 2e-06 → 6e-06."], tips
    shoot(page, "what-to-try-next")
    page.click("#next-steps a")
    assert page.input_value("#id_lr") == "2e-06"  # Clone: the settings to change, as they were
