"""The path a new user walks, in a real browser against a live server, a real Celery worker and Redis: sign in,
upload a sample dataset, read its validation report, create a job, watch it train to the end, read its results,
download the adapter (PEFT loads it) and ask the playground. One test per task: classification, then causal LM
with the answer streaming in. Base models are the built-in demo models a fresh install lists (the pretrained
MiniLM-L6 encoder and the tiny demo LM), trained on this machine's CPU: the classifier with settings that suit the
ticket sample, the LM with the form's advised defaults on a chat set in a pirate's voice (tests/advice_samples.py),
whose greedy answer to a question unlike the training rows must open in that voice, and the base's must not."""
import json
import re
import zipfile

import pytest
import torch

from advice_samples import HELD_OUT_PROMPTS, STYLE_OPENING, pirate_chat_rows, write_jsonl
from browser_steps import submit_job_form, upload_file, upload_sample, watch_to_the_end
from webapp.jobs.models import Job

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# One epoch over the ticket sample is enough for MiniLM to route tickets well; the demo LM trains with the form's
# advised settings as they are (trainer.advice).
CLASSIFIER_TRAINING = {"epochs": "1", "max_steps": "", "batch_size": "16", "max_length": "64",
                       "eval_fraction": "0.1", "lr": "0.003", "rank": "8", "alpha": "16"}
ADVISED = {"epochs": "epochs", "lr": "lr", "batch_size": "batch_size", "max_length": "max_length",
           "rank": "lora.rank", "alpha": "lora.alpha", "targets": "lora.targets"}
GREEDY = {"temperature": 0, "max_new_tokens": 16, "seed": 0}
# Sampled answers in the playground: the seed is picked by the test (see `a_seed_that_streams`), so what streams is
# known before the request is sent.
LM_SAMPLING = {"temperature": 1.0, "top_p": 0.95, "max_new_tokens": 24}
# The browser records every answer piece that arrives as a server-sent event, before the page draws it.
COUNT_STREAMED_PIECES = """
window.streamedPieces = {base: [], tuned: []};
const PageEventSource = window.EventSource;
window.EventSource = class extends PageEventSource {
  constructor(...args) {
    super(...args);
    this.addEventListener("message", (event) => {
      const data = JSON.parse(event.data);
      if (data.side && data.text !== undefined) window.streamedPieces[data.side].push(data.text);
    });
  }
};
"""


def create_job(page, shoot, model_label: str, name: str, training: dict, tick: tuple[str, ...] = ()) -> Job:
    submit_job_form(page, shoot, model_label, name, training, tick)
    return Job.objects.get(name=name)


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


def download_adapter(page, tmp_path, kind: str = "adapter"):
    with page.expect_download() as download:
        page.click(f"#downloads a[href$='/download/{kind}/']")
    archive = tmp_path / f"{kind}.zip"
    download.value.save_as(archive)
    zipfile.ZipFile(archive).extractall(tmp_path / kind)
    return next((tmp_path / kind).iterdir())


def ask_playground(page, job: Job, prompt: str, sampling: dict | None = None) -> None:
    """Ask the playground about `prompt` with `sampling` (field: value; none for a classifier) and wait for
    Done."""
    page.goto("/playground/")
    page.select_option("#id_job", str(job.pk))
    page.fill("#id_prompt", prompt)
    for field, value in (sampling or {}).items():
        page.fill(f"#id_{field}", str(value))
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


def check_the_adapter_against_the_merged_download(base_source: str, adapter, merged) -> None:
    """PEFT loads the downloaded adapter onto the base; its logits equal the merged download's, and differ from
    the base's (the adapter is not a no-op)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.models import resolve_model_path

    base_path = resolve_model_path(base_source)
    tokenizer = AutoTokenizer.from_pretrained(merged)
    batch = tokenizer(["Add 2 and 3.", "Reverse the order of these words."], padding=True, return_tensors="pt")
    with torch.no_grad():
        base_logits = AutoModelForCausalLM.from_pretrained(base_path).eval()(**batch).logits
        peft_logits = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), adapter).eval()(
            **batch).logits
        merged_logits = AutoModelForCausalLM.from_pretrained(merged).eval()(**batch).logits
    torch.testing.assert_close(peft_logits, merged_logits, rtol=1e-4, atol=1e-4)
    assert (peft_logits - base_logits).abs().max() > 1e-3


def a_seed_that_streams(job: Job, base_source: str, adapter, prompt: str) -> tuple[int, dict, dict]:
    """The first seed for which both answers, computed here with the same models, settings and prompt layout as
    the inference worker, stream in at least 3 pieces: (seed, {side: pieces}, {side: tokens generated}). A piece
    is one token's text, or several tokens' when a character spans them (byte-level BPE)."""
    from trainer.config import GENERATION_DEFAULTS
    from trainer.inference import _eos_ids, load_for_inference, prompt_ids, sample_token_ids, stream_generate
    from webapp.results.playground import job_spec
    from workers.serving_tasks import prompt_for

    layout = job_spec(job)["format"]
    # The serving worker answers with the base plus the adapter (unmerged), as here.
    models = {"base": load_for_inference(base_source, task="causal-lm"),
              "tuned": load_for_inference(base_source, task="causal-lm", adapter_dir=adapter)}
    # The playground sets no top-k or repetition penalty: the worker's generation uses the defaults.
    settings = {"top_k": GENERATION_DEFAULTS["top_k"], "repetition_penalty": GENERATION_DEFAULTS["repetition_penalty"],
                **LM_SAMPLING}
    for seed in range(100):
        pieces, tokens = {}, {}
        for side, (model, tokenizer) in models.items():
            laid_out = prompt_for(layout, prompt, tokenizer)
            tokens[side] = len(list(sample_token_ids(model, prompt_ids(tokenizer, laid_out, 1024), seed=seed,
                                                     eos_ids=_eos_ids(model, tokenizer), **settings)))
            pieces[side] = list(stream_generate(model, tokenizer, laid_out, seed=seed, **settings))
        if all(len(p) >= 3 for p in pieces.values()):
            return seed, pieces, tokens
    raise AssertionError("no seed in 0-99 gives two answers of 3 pieces or more")


def advised_form_values(page) -> dict[str, str]:
    """The advised settings the new job form shows, each with its reason."""
    shown = {}
    for name in ADVISED:
        assert page.inner_text(f'[data-advice-for="{name}"]').startswith("Advised: "), name
        shown[name] = page.input_value(f"#id_{name}")
    return shown


def stored_setting(job: Job, dotted: str):
    section, _, name = dotted.rpartition(".")
    return (job.settings[section] if section else job.settings)[name]


def test_a_new_user_trains_a_causal_lm_and_watches_its_answer_stream(signed_in, shoot, demo_models, tmp_path):
    base = demo_models["demo/tiny-lm"]
    shoot.tour = {"new-job": "new-job", "results": "results", "playground": "playground"}  # the README's tour
    page = signed_in("omar", "Team Omar")
    upload_file(page, shoot, write_jsonl(pirate_chat_rows(), tmp_path / "pirate.jsonl"), "pirate chat")
    assert "chat" in page.inner_text("main")

    page.goto("/jobs/new/")
    advised = advised_form_values(page)
    job = create_job(page, shoot, f"{base.name} (demo)", "Pirate voice", {}, tick=("merge",))
    for name, dotted in ADVISED.items():  # the job trains with the settings the form proposed, untouched
        assert str(stored_setting(job, dotted)) == advised[name] or \
            float(stored_setting(job, dotted)) == float(advised[name]), name
    widths = watch_to_the_end(page, shoot)
    job.refresh_from_db()
    assert job.state == "succeeded", job.error
    assert_the_bar_moved(widths, job)

    metrics = read_results(page, shoot, job)
    before, after = eval_row(page, "Perplexity")
    assert float(before.replace(",", "")) == pytest.approx(metrics["base_eval"]["perplexity"], rel=0.01)
    assert float(after.replace(",", "")) == pytest.approx(metrics["final_eval"]["perplexity"], rel=0.01)
    assert metrics["final_eval"]["perplexity"] < metrics["base_eval"]["perplexity"], metrics  # it learned
    adapter = download_adapter(page, tmp_path)
    merged = download_adapter(page, tmp_path, "merged")
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == job.settings["lora"]["rank"]
    check_the_adapter_against_the_merged_download(base.source, adapter, merged)

    # Sampling at temperature 1 with a seed the test chose: each side streams exactly the pieces computed here (at
    # least 3), each arriving as its own event, no more events than generated tokens.
    prompt = "Add 2 and 3."
    seed, expected, tokens = a_seed_that_streams(job, base.source, adapter, prompt)
    page.add_init_script(COUNT_STREAMED_PIECES)
    ask_playground(page, job, prompt, {**LM_SAMPLING, "seed": seed})
    streamed = page.evaluate("window.streamedPieces")
    shoot(page, "playground")
    assert streamed == expected, (seed, streamed, expected)
    for side in ("base", "tuned"):  # one event per token, but for tokens that end mid-character
        assert 3 <= len(streamed[side]) <= tokens[side], (side, streamed[side], tokens[side])
    for side in ("base", "tuned"):
        assert page.text_content(f'[data-side="{side}"]') == "".join(expected[side])

    # Greedy answers to questions none of the training rows asks: the tuned model speaks like a pirate, the base not.
    for question in HELD_OUT_PROMPTS:
        ask_playground(page, job, question, GREEDY)
        answers = {side: page.text_content(f'[data-side="{side}"]') for side in ("base", "tuned")}
        assert answers["tuned"].startswith(STYLE_OPENING) and "matey" not in answers["base"].lower(), answers
    shoot(page, "playground-style")
