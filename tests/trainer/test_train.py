import json

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
        self.steps, self.evals, self.stop_at = [], [], stop_at

    def on_step(self, step, total_steps, loss, lr, tokens_per_s, eta_s):
        self.steps.append((step, total_steps, loss, lr, tokens_per_s, eta_s))

    def on_eval(self, metrics):
        self.evals.append(metrics)

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


def test_gradient_checkpointing_gives_the_same_first_steps(tmp_path, tiny_llama_dir):
    plain = train(_lm_config(tmp_path, tiny_llama_dir, max_steps=3, out=str(tmp_path / "a")))
    checkpointed = train(_lm_config(tmp_path, tiny_llama_dir, max_steps=3, out=str(tmp_path / "b"),
                                    gradient_checkpointing=True))
    assert [h["loss"] for h in checkpointed["history"]] == pytest.approx([h["loss"] for h in plain["history"]],
                                                                         rel=1e-5)


def test_out_of_memory_names_the_settings_to_lower(tmp_path, tiny_llama_dir, monkeypatch):
    def explode(self, window):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(train_module._Run, "_step", explode)
    with pytest.raises(OutOfMemoryError, match=r"batch_size \(now 4.*max_length \(now 512\).*rank \(now 4\)"):
        train(_lm_config(tmp_path, tiny_llama_dir, max_steps=2))


def test_a_dataset_with_no_usable_rows_is_a_data_error(tmp_path, tiny_llama_dir):
    data = _jsonl(tmp_path / "bad.jsonl", [{"prompt": "p", "completion": ""}, {"prompt": "q", "completion": ""}])
    with pytest.raises(DataError):
        train(_lm_config(tmp_path, tiny_llama_dir, data=data, max_steps=2))


# What a web user gets for MiniLM on the support-ticket sample (see the report in the lead's notes).
MINILM_SAMPLE_SETTINGS = dict(lr=3e-3, epochs=1.0, batch_size=16, max_length=64,
                              lora=LoraSettings(rank=8, alpha=16, dropout=0.05, targets="attention"))


@pytest.mark.slow
def test_lora_on_minilm_reaches_85_percent_on_the_support_ticket_sample_within_3_minutes_on_2_cores(
        tmp_path, monkeypatch):
    from trainer.samples import sample_path

    monkeypatch.setenv("LORAWORKS_SAMPLES_DIR", str(tmp_path / "samples"))
    started = _cpu_seconds()
    metrics = train(TrainConfig(model="demo/minilm-l6", data=str(sample_path("support-tickets")),
                                out=str(tmp_path / "run"), task="classification", checkpoint_every=0,
                                **MINILM_SAMPLE_SETTINGS))
    assert metrics["final_eval"]["accuracy"] >= 0.85
    assert metrics["final_eval"]["eval_examples"] >= 50  # a real held-out split, not a handful
    # CPU seconds, not wall time, so a busy test machine does not fail it: 2 cores x 180 s.
    assert _cpu_seconds() - started < 2 * 180


def _cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def test_without_a_held_out_split_training_runs_and_reports_no_eval(tmp_path, tiny_llama_dir):
    reporter = _Recorder()
    metrics = train(_lm_config(tmp_path, tiny_llama_dir, max_steps=2, eval_fraction=0.0, eval_every=1), reporter)
    assert metrics["status"] == "completed" and metrics["eval_examples"] == 0
    assert metrics["base_eval"] is None and metrics["final_eval"] is None and reporter.evals == []
