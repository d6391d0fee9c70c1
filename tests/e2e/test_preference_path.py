"""A DPO job as a newcomer runs it, in Chromium against a live server and a real Celery worker: sign in, take the
"preferences" sample (Python questions, a friendly chosen and a curt rejected answer) with "Use sample", open the
job form (it switches the method to dpo and starts from the settings advised for DPO, which it proposes again when
the method changes), submit it untouched, watch it to the end, and read held-out preference accuracy rising on the
results page, in the database and in the downloaded metrics. The claims are checked on questions the sample's
templates did not make: the downloaded adapter, loaded with PEFT in this process, prefers the friendly answer of
hand-written pairs (tests/advice_samples.py) that the base does not, and in the playground (greedy) the tuned model
opens its answers to hand-written questions with one of the sample's greetings, the base never."""
import pytest
import torch

from advice_samples import python_preference_pairs
from browser_steps import watch_to_the_end
from test_classification_path import (ADVISED, GREEDY, advised_form_values, ask_playground, download_adapter,
                                      eval_row, read_results, stored_setting)
from trainer.samples.preferences import GREETINGS
from webapp.jobs.models import Job

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Held-out preference accuracy (the job's split, from the sample's templates): the base prefers none of the friendly
# answers, which are longer; the tuned model prefers them all or nearly.
BASE_AT_MOST, TUNED_AT_LEAST = 0.1, 0.9
# On the hand-written pairs: 8 pairs; the base prefers none, the tuned model at least 5.
INDEPENDENT_BASE_AT_MOST, INDEPENDENT_TUNED_AT_LEAST = 0.0, 0.625
# Asked in the playground, laid out as the sample's prompts; written apart from the sample's four templates.
PLAYGROUND_QUESTIONS = ["How do I reverse a list?", "What is a dictionary in Python?",
                        "How do I read a file line by line?"]


def dpo_form_values(page) -> dict[str, str]:
    """The advised settings the form shows, DPO's SFT weight among them."""
    return {**advised_form_values(page), "rpo_alpha": page.input_value("#id_rpo_alpha")}


def answer_log_prob(model, tokenizer, prompt: str, answer: str) -> float:
    """log p(answer | prompt), summed over the answer's tokens, as DPO's held-out eval counts it."""
    prompt_len = len(tokenizer(prompt).input_ids)
    ids = torch.tensor([tokenizer(prompt + answer).input_ids])
    with torch.no_grad():
        log_probs = model(ids).logits[0, :-1].float().log_softmax(-1)
    targets = ids[0, 1:]
    return float(log_probs[torch.arange(prompt_len - 1, len(targets)), targets[prompt_len - 1:]].sum())


def preference_accuracy(model, tokenizer, pairs) -> float:
    return sum(answer_log_prob(model, tokenizer, prompt, chosen) > answer_log_prob(model, tokenizer, prompt, rejected)
               for prompt, chosen, rejected in pairs) / len(pairs)


def test_a_dpo_job_on_the_preferences_sample_raises_preference_accuracy(signed_in, shoot, demo_models, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.models import resolve_model_path

    base = demo_models["demo/tiny-lm"]
    page = signed_in("pia", "Team Pia")
    page.goto("/datasets/")
    with page.expect_navigation(url="**/datasets/*/"):
        page.locator("#samples .card", has_text="preferences").locator("button").click()
    page.wait_for_selector("#dataset-status.ready", timeout=120_000)
    assert "preference" in page.inner_text("main")
    shoot(page, "dataset-report")

    page.goto("/jobs/new/")
    page.select_option("#id_base_model", label=f"{base.name} (demo)")
    page.wait_for_selector("#job-form[data-advised]", state="attached")
    assert page.input_value("#id_method") == "dpo"
    advised = dpo_form_values(page)
    assert page.inner_text('[data-advice-for="epochs"]').startswith("Advised: 70 steps in all")  # 216 pairs, batch 16
    assert float(advised["rpo_alpha"]) == 10 and "writing the chosen answers" in \
        page.inner_text('[data-advice-for="rpo_alpha"]')
    page.select_option("#id_method", "sft")  # SFT is advised its own, longer run; back to DPO, DPO's again
    page.wait_for_selector('#job-form[data-advised="2"]', state="attached")
    assert page.inner_text('[data-advice-for="epochs"]').startswith("Advised: 154 steps in all")
    assert float(page.input_value("#id_rpo_alpha")) == 0
    page.select_option("#id_method", "dpo")
    page.wait_for_selector('#job-form[data-advised="3"]', state="attached")
    assert dpo_form_values(page) == advised
    page.fill("#id_name", "Friendly answers")
    page.wait_for_function("document.querySelector('#estimate').innerText.includes('%')")
    shoot(page, "new-job")
    with page.expect_navigation(url="**/jobs/*/"):
        page.click("#job-form button[type=submit]")
    job = Job.objects.get(name="Friendly answers")
    assert job.settings["method"] == "dpo"
    for name, dotted in {**ADVISED, "rpo_alpha": "rpo_alpha"}.items():  # the advised settings, untouched
        assert str(stored_setting(job, dotted)) == advised[name] or \
            float(stored_setting(job, dotted)) == float(advised[name]), name

    watch_to_the_end(page, shoot)
    job.refresh_from_db()
    assert job.state == "succeeded", job.error
    metrics = read_results(page, shoot, job)
    before, after = metrics["base_eval"]["preference_accuracy"], metrics["final_eval"]["preference_accuracy"]
    assert eval_row(page, "Preference accuracy") == (f"{100 * before:.1f} %", f"{100 * after:.1f} %")
    assert before <= BASE_AT_MOST and after >= TUNED_AT_LEAST, (before, after)
    assert metrics["final_eval"]["reward_margin"] > 0

    # Pairs the sample's templates did not make, scored with PEFT's loading of the downloaded adapter.
    adapter = download_adapter(page, tmp_path)
    base_path = resolve_model_path(base.source)
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    plain = AutoModelForCausalLM.from_pretrained(base_path).eval()
    pairs = python_preference_pairs()
    independent_before = preference_accuracy(plain, tokenizer, pairs)
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), adapter).eval()
    independent_after = preference_accuracy(tuned, tokenizer, pairs)
    assert independent_before <= INDEPENDENT_BASE_AT_MOST < INDEPENDENT_TUNED_AT_LEAST <= independent_after, \
        (independent_before, independent_after)

    # The style shows: greedy answers to questions unlike the sample's open with one of its greetings; the base's
    # never do (its answer is empty: it ends at once after "Answer:").
    for question in PLAYGROUND_QUESTIONS:
        ask_playground(page, job, f"Question: {question}\nAnswer:", GREEDY)
        answers = {side: page.text_content(f'[data-side="{side}"]').strip() for side in ("base", "tuned")}
        assert answers["tuned"].startswith(tuple(GREETINGS)), answers
        assert not any(greeting in answers["base"] for greeting in GREETINGS), answers
    shoot(page, "playground-style")
