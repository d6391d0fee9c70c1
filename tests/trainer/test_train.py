import json
import time
from pathlib import Path

import pytest
import torch

import trainer.train as train_module
from trainer.config import LoraSettings, TrainConfig
from trainer.data.dataset import prepare
from trainer.errors import DataError, OutOfMemoryError
from trainer.models import load_tokenizer
from trainer.reporter import NullReporter
from trainer.train import train

WORDS = ["red", "blue", "green", "gold", "pink", "gray", "teal", "navy"]


class _Recorder(NullReporter):
    def __init__(self, stop_at=None):
        self.steps, self.evals, self.logs, self.times, self.stop_at = [], [], [], [], stop_at

    def on_step(self, step, total_steps, loss, lr, tokens_per_s, eta_s):
        self.steps.append((step, total_steps, loss, lr, tokens_per_s, eta_s))
        self.times.append(time.perf_counter())

    def on_eval(self, metrics):
        self.evals.append(metrics)

    def on_log(self, message):
        self.logs.append(message)

    def should_stop(self):
        return self.stop_at is not None and len(self.steps) >= self.stop_at


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def _lm_data(tmp_path):
    return _jsonl(tmp_path / "lm.jsonl", [{"prompt": f"Say {w}:", "completion": f" {w} {w} {w}"} for w in WORDS] * 3)


def _lm_config(tmp_path, model_dir, **overrides):
    values = dict(model=str(model_dir), data=_lm_data(tmp_path), out=str(tmp_path / "run"), batch_size=4,
                  lr=1e-2, eval_fraction=0.25, lora=LoraSettings(rank=4, dropout=0.0))
    return TrainConfig(**{**values, **overrides})


def test_loss_falls_on_a_learnable_task_and_every_step_is_reported(tmp_path, tiny_llama_dir):
    # The tiny model's frozen random head (std 0.02, hidden 32) caps its logits near 0.6, so the loss can only
    # fall from ln(263) = 5.57 to about 5.0 and only slowly: 0.1 nats in 20 steps is a clear fall.
    reporter = _Recorder()
    metrics = train(_lm_config(tmp_path, tiny_llama_dir, max_steps=20, warmup=0.1, lr=3e-2,
                               lora=LoraSettings(rank=8, targets="attention+mlp", dropout=0.0)), reporter)
    losses = [entry["loss"] for entry in metrics["history"]]
    assert sum(losses[-5:]) / 5 < losses[0] - 0.1
    assert metrics["final_eval"]["eval_loss"] < metrics["base_eval"]["eval_loss"] - 0.1
    assert [s[0] for s in reporter.steps] == list(range(1, 21)) and {s[1] for s in reporter.steps} == {20}
    assert [s[2] for s in reporter.steps] == losses
    assert reporter.steps[-1][5] == 0 and all(s[4] > 0 for s in reporter.steps)
    assert [e["stage"] for e in reporter.evals] == ["base", "final"]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["history"] == metrics["history"]


def test_train_tokens_count_every_non_padding_token_of_the_epochs_trained(tmp_path, tiny_llama_dir):
    config = _lm_config(tmp_path, tiny_llama_dir, epochs=2.0)
    features, _, _, _ = prepare(config, load_tokenizer(tiny_llama_dir))
    metrics = train(config)
    assert metrics["steps"] == 2 * -(-len(features) // 4)
    assert metrics["train_tokens"] == 2 * sum(len(f["input_ids"]) for f in features)
    padded = 0
    for epoch in range(2):
        for batch in train_module.batch_order(features, 4, seed=0, epoch=epoch):
            padded += max(len(features[i]["input_ids"]) for i in batch) * len(batch)
    assert metrics["padding_fraction"] == pytest.approx(1 - metrics["train_tokens"] / padded)


def test_schedule_warms_up_then_decays_to_zero_over_the_planned_steps(tmp_path, tiny_llama_dir):
    metrics = train(_lm_config(tmp_path, tiny_llama_dir, max_steps=10, warmup=0.2, scheduler="linear"))
    lrs = [entry["lr"] for entry in metrics["history"]]
    assert lrs == pytest.approx([0.0, 5e-3, 1e-2, 8.75e-3, 7.5e-3, 6.25e-3, 5e-3, 3.75e-3, 2.5e-3, 1.25e-3])


def test_a_stop_request_saves_a_checkpoint_and_ends_cleanly(tmp_path, tiny_llama_dir):
    metrics = train(_lm_config(tmp_path, tiny_llama_dir, max_steps=20, checkpoint_every=0), _Recorder(stop_at=2))
    assert metrics["status"] == "stopped" and metrics["steps"] == 2 and metrics["final_eval"] is None
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step-000002"]
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()  # kept, to download or continue
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "stopped"


def test_checkpoints_are_written_every_n_steps_and_the_newest_kept(tmp_path, tiny_llama_dir):
    train(_lm_config(tmp_path, tiny_llama_dir, max_steps=5, checkpoint_every=2))
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-000004", "step-000005"]


def test_classification_reports_accuracy_f1_and_a_confusion_matrix_with_label_names(tmp_path, tiny_bert_dir):
    rows = [{"text": f"{word} {i}", "label": word} for i in range(10) for word in ("refund", "crash", "hello")]
    reporter = _Recorder()
    metrics = train(TrainConfig(model=str(tiny_bert_dir), data=_jsonl(tmp_path / "c.jsonl", rows),
                                out=str(tmp_path / "run"), task="classification", batch_size=8, lr=3e-2,
                                max_steps=40, eval_every=10, eval_fraction=0.3,
                                lora=LoraSettings(dropout=0.0)), reporter)
    final = metrics["final_eval"]
    assert metrics["label_mapping"] == {0: "crash", 1: "hello", 2: "refund"}
    assert final["confusion_matrix"]["labels"] == ["crash", "hello", "refund"]
    matrix = final["confusion_matrix"]["matrix"]
    assert sum(map(sum, matrix)) == final["eval_examples"] == 9
    assert final["accuracy"] == pytest.approx(sum(matrix[i][i] for i in range(3)) / 9)
    # The tiny random BERT learns this only partly (byte tokens, hidden 32): well above chance is the bar.
    assert final["accuracy"] > 0.5
    assert final["eval_loss"] < 0.7 * metrics["base_eval"]["eval_loss"]
    assert [e["step"] for e in metrics["eval_history"]] == [10, 20, 30]
    assert metrics["modules_to_save"] == ["classifier"]
    adapter = tmp_path / "run" / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["task_type"] == "SEQ_CLS"
    assert (adapter / "label_mapping.json").is_file()


def test_gradient_checkpointing_recomputes_each_layer_and_gives_the_same_first_steps(tmp_path, tiny_llama_dir,
                                                                                     monkeypatch):
    from transformers.models.llama.modeling_llama import LlamaMLP

    # Counted inside each decoder layer (its MLP): wrapping the layer's own forward would turn checkpointing off.
    calls = []
    forward = LlamaMLP.forward

    def counted(self, *args, **kwargs):
        calls.append(1)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(LlamaMLP, "forward", counted)
    # No held-out split: every layer call is a training forward (3 steps x 1 batch x 2 layers).
    plain = train(_lm_config(tmp_path, tiny_llama_dir, max_steps=3, eval_fraction=0.0, out=str(tmp_path / "a")))
    plain_calls, calls[:] = len(calls), []
    checkpointed = train(_lm_config(tmp_path, tiny_llama_dir, max_steps=3, eval_fraction=0.0,
                                    out=str(tmp_path / "b"), gradient_checkpointing=True))
    assert plain_calls == 3 * 2
    assert len(calls) == 2 * plain_calls  # each layer runs again in the backward pass
    assert [h["loss"] for h in checkpointed["history"]] == pytest.approx([h["loss"] for h in plain["history"]],
                                                                         rel=1e-5)


def test_a_dataset_with_no_usable_rows_is_a_data_error(tmp_path, tiny_llama_dir):
    data = _jsonl(tmp_path / "bad.jsonl", [{"prompt": "p", "completion": ""}, {"prompt": "q", "completion": ""}])
    with pytest.raises(DataError, match="no usable training examples are left after validation"):
        train(_lm_config(tmp_path, tiny_llama_dir, data=data, max_steps=2))


def test_rows_lost_to_problems_truncation_and_empty_loss_are_logged_before_training(tmp_path, tiny_llama_dir):
    rows = [{"prompt": f"Say {w}:", "completion": f" {w}"} for w in WORDS]
    rows[1] = {"prompt": "Say blue:"}  # row 2: no completion
    rows[3] = {"prompt": 5, "completion": " x"}  # row 4: not text
    rows[5] = {"prompt": "x" * 40, "completion": " gray"}  # longer than max_length: the completion is cut off
    rows.append({"prompt": "Say more:", "completion": " more " * 8})  # truncated, keeps some completion
    reporter = _Recorder()
    metrics = train(_lm_config(tmp_path, tiny_llama_dir, data=_jsonl(tmp_path / "mixed.jsonl", rows),
                               max_length=24, max_steps=1, eval_fraction=0.0), reporter)
    assert metrics["data"]["skipped_rows"] == 2 and metrics["data"]["truncated_rows"] == 2
    assert metrics["data"]["no_loss_rows"] == 1 and metrics["train_examples"] == len(rows) - 3
    (line,) = [log for log in reporter.logs if log.startswith("data:")]
    assert line.startswith("data: 2 rows skipped for problems, 2 truncated to 24 tokens, 1 left out with no "
                           "token to learn from")
    assert "row 2 (completion): missing field 'completion'" in line
    assert "row 4 (prompt): 'prompt' must be text" in line
    assert reporter.logs.index(line) < next(i for i, log in enumerate(reporter.logs) if log.startswith("loading"))


def test_throughput_eta_and_runtime_leave_out_periodic_evals_and_checkpoints(tmp_path, tiny_llama_dir, monkeypatch):
    from trainer import checkpoint

    pause = 0.5
    evaluate, save = train_module._Run._evaluate, checkpoint.save_checkpoint
    monkeypatch.setattr(train_module._Run, "_evaluate", lambda self: (time.sleep(pause), evaluate(self))[1])
    monkeypatch.setattr(checkpoint, "save_checkpoint", lambda *a, **k: (time.sleep(pause), save(*a, **k))[1])
    reporter = _Recorder()
    started = time.perf_counter()
    metrics = train(_lm_config(tmp_path, tiny_llama_dir, max_steps=3, eval_every=1, checkpoint_every=1), reporter)
    total = time.perf_counter() - started
    paused = pause * (2 + 3)  # evals after steps 1 and 2 (not the last), a checkpoint after every step
    assert metrics["train_wall_s"] - metrics["train_runtime_s"] >= paused
    assert metrics["train_runtime_s"] < total - paused - 2 * pause  # base and final evals are outside too
    assert metrics["tokens_per_s"] == pytest.approx(metrics["train_tokens"] / metrics["train_runtime_s"])
    assert reporter.steps[-1][4] == pytest.approx(metrics["tokens_per_s"])
    # The ETAs give the training time so far (step 1 of 3: 2x it, step 2: half of it). Between the two steps an
    # eval and a checkpoint took 2 x pause of wall time, which that training time leaves out.
    trained_by_1, trained_by_2 = reporter.steps[0][5] / 2, reporter.steps[1][5] * 2
    assert trained_by_2 - trained_by_1 < reporter.times[1] - reporter.times[0] - 0.9 * 2 * pause


def test_packing_trains_on_full_length_chunks_of_the_concatenated_examples(tmp_path, tiny_llama_dir):
    from trainer.data.batching import pack

    config = _lm_config(tmp_path, tiny_llama_dir, epochs=1.0, max_length=32)
    unpacked, _, _, _ = prepare(config, load_tokenizer(tiny_llama_dir))
    expected = pack(unpacked, 32)
    metrics = train(_lm_config(tmp_path, tiny_llama_dir, epochs=1.0, max_length=32, packing=True))
    assert metrics["data"]["packed"] is True
    assert metrics["data"]["train_packed_sequences"] == metrics["train_examples"] == len(expected)
    assert len(expected) == -(-sum(len(f["input_ids"]) for f in unpacked) // 32)  # no chunk dropped
    assert metrics["steps"] == -(-len(expected) // 4)
    assert metrics["train_tokens"] == sum(len(f["input_ids"]) for f in unpacked)
    # Every chunk but the last is full, so at most one batch pads, and only up to 32 tokens a row.
    assert metrics["padding_fraction"] < 4 * 32 / metrics["train_tokens"]
    assert metrics["eval_examples"] == 6  # eval stays unpacked: the 25 % held-out rows of 24


def test_chat_data_without_a_template_saves_the_default_template_with_the_adapter_and_merged_model(
        tmp_path, tiny_llama_dir):
    from transformers import AutoTokenizer

    from tiny_models import tiny_llama, tiny_tokenizer
    from trainer.data.render import DEFAULT_CHAT_TEMPLATE, segments
    from trainer.inference import generate, load_for_inference, prompt_ids

    base = tmp_path / "no-template"
    tiny_llama()[0].save_pretrained(base)
    tiny_tokenizer(chat_template=False).save_pretrained(base)
    assert not load_tokenizer(base).chat_template
    conversations = [[{"role": "user", "content": f"Colour {w}?"}, {"role": "assistant", "content": w}]
                     for w in WORDS] * 2
    data = _jsonl(tmp_path / "chat.jsonl", [{"messages": m} for m in conversations])
    config = _lm_config(tmp_path, base, data=data, max_steps=2, merge=True)
    features, _, _, _ = prepare(config, load_tokenizer(base))
    train(config)

    plain = load_tokenizer(base)
    for folder in (tmp_path / "run" / "adapter", tmp_path / "run" / "merged"):
        saved = AutoTokenizer.from_pretrained(folder)
        assert saved.chat_template == DEFAULT_CHAT_TEMPLATE
        for messages in conversations[:3]:
            rendered = saved.apply_chat_template(messages, tokenize=False)
            assert rendered == "".join(text for text, _ in segments({"messages": messages}, "chat", plain))
        trained_ids = {tuple(f["input_ids"]) for f in features}
        assert tuple(saved.apply_chat_template(conversations[0], tokenize=True, return_dict=True)["input_ids"]) \
            in trained_ids  # exactly the tokens the run trained on

    model, tokenizer = load_for_inference(str(base), adapter_dir=tmp_path / "run" / "adapter")
    question = conversations[0][:1]
    assert prompt_ids(tokenizer, question, 100) == tokenizer("<|user|>\nColour red?\n<|assistant|>\n",
                                                             add_special_tokens=False)["input_ids"]
    assert isinstance(generate(model, tokenizer, question, max_new_tokens=3, temperature=0), str)


# What a web user gets for MiniLM on the support-ticket sample (see the report in the lead's notes).
MINILM_SAMPLE_SETTINGS = dict(lr=3e-3, epochs=1.0, batch_size=16, max_length=64,
                              lora=LoraSettings(rank=8, alpha=16, dropout=0.05, targets="attention"))


def train_minilm(train_rows: list[dict], eval_rows: list[dict], folder, *, head_only: bool = False,
                 **settings) -> dict:
    """Train MiniLM on `train_rows` and evaluate on `eval_rows` (a file of their own, so the held-out rows are
    exactly these); `head_only` trains the same way with no LoRA layer at all, only the new head."""
    from data_helpers import write_jsonl

    folder.mkdir(parents=True)
    config = TrainConfig(model="demo/minilm-l6", data=str(write_jsonl(folder / "train.jsonl", train_rows)),
                         eval_data=str(write_jsonl(folder / "eval.jsonl", eval_rows)), out=str(folder / "run"),
                         task="classification", checkpoint_every=0, **{**MINILM_SAMPLE_SETTINGS, **settings})
    import trainer.inject

    with pytest.MonkeyPatch.context() as patch:
        if head_only:  # LoRA wraps no layer: only the classifier head, trainable in any case, learns
            patch.setattr(trainer.inject, "resolve_targets", lambda model, spec: [])
        return train(config)


@pytest.mark.slow
def test_lora_on_minilm_routes_tickets_of_unseen_templates_and_beats_training_the_head_alone(tmp_path):
    """No problem or detail template of the held-out tickets is in training (the sample's own random split would
    bring them back: see test_data_samples). Within 3 CPU minutes on 2 cores for both runs."""
    from data_helpers import split_tickets_by_template
    from trainer.samples import support_tickets

    train_rows, held_out = split_tickets_by_template(support_tickets.rows())
    started = _cpu_seconds()
    lora = train_minilm(train_rows, held_out, tmp_path / "lora")
    head = train_minilm(train_rows, held_out, tmp_path / "head", head_only=True)
    print(f"unseen ticket templates: LoRA {lora['final_eval']['accuracy']:.3f}, "
          f"head only {head['final_eval']['accuracy']:.3f}, base {lora['base_eval']['accuracy']:.3f}")
    assert lora["final_eval"]["eval_examples"] == head["final_eval"]["eval_examples"] == len(held_out)
    assert head["trainable_params"] < lora["trainable_params"]  # the baseline really trained the head alone
    # Measured: LoRA 80.4 %, head only 26.1 %, the untrained base 23.9 % (46 held-out tickets, one epoch).
    assert lora["final_eval"]["accuracy"] >= 0.75
    assert lora["final_eval"]["accuracy"] >= head["final_eval"]["accuracy"] + 0.3
    # CPU seconds, not wall time, so a busy test machine does not fail it: 2 cores x 180 s.
    assert _cpu_seconds() - started < 2 * 180


# 80 requests to a home-services firm (plumbing, electrical, garden, cleaning), each written by hand: no two share
# a template, so the last 5 of each label are held out as they are.
HANDWRITTEN = Path(__file__).parent / "handwritten" / "home_service_requests.jsonl"


@pytest.mark.slow
def test_lora_on_minilm_learns_handwritten_requests_and_beats_training_the_head_alone(tmp_path):
    rows = [json.loads(line) for line in HANDWRITTEN.read_text().splitlines()]
    train_rows, held_out = rows[:60], rows[60:]  # rows alternate labels: 15 and 5 of each
    lora = train_minilm(train_rows, held_out, tmp_path / "lora", epochs=5.0)
    head = train_minilm(train_rows, held_out, tmp_path / "head", head_only=True, epochs=5.0)
    print(f"handwritten requests: LoRA {lora['final_eval']['accuracy']:.3f}, "
          f"head only {head['final_eval']['accuracy']:.3f}, base {lora['base_eval']['accuracy']:.3f}")
    assert lora["final_eval"]["eval_examples"] == 20  # measured: LoRA 85 %, head only 65 %, base 40 %
    assert lora["final_eval"]["accuracy"] >= 0.8
    assert lora["final_eval"]["accuracy"] > head["final_eval"]["accuracy"]


def _cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def test_without_a_held_out_split_training_runs_and_reports_no_eval(tmp_path, tiny_llama_dir):
    reporter = _Recorder()
    metrics = train(_lm_config(tmp_path, tiny_llama_dir, max_steps=2, eval_fraction=0.0, eval_every=1), reporter)
    assert metrics["status"] == "completed" and metrics["eval_examples"] == 0
    assert metrics["base_eval"] is None and metrics["final_eval"] is None and reporter.evals == []
