"""The CLI end to end on tiny models, run as a separate process exactly as a person or a script would."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.cli import build_parser, config_from_args
from trainer.config import LoraSettings, TrainConfig

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "trainer", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd or ROOT, timeout=300)


def _json(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_train_flags_become_a_config_and_unset_flags_keep_the_config_defaults():
    args = build_parser().parse_args(["train", "--model", "m", "--data", "d.jsonl", "--out", "o", "--rank", "4",
                                      "--rslora", "--max-steps", "7", "--lr", "1e-3", "--packing"])
    config = config_from_args(args)
    assert config == TrainConfig(model="m", data="d.jsonl", out="o", max_steps=7, lr=1e-3, packing=True,
                                 lora=LoraSettings(rank=4, rslora=True))


def test_a_setting_out_of_range_exits_2_with_the_reason_on_stderr(tmp_path):
    result = _cli("train", "--model", "m", "--data", "d.jsonl", "--out", tmp_path, "--rank", "0")
    assert result.returncode == 2
    assert "rank" in result.stderr and "Traceback" not in result.stderr


def test_validate_exits_1_on_an_unusable_file_and_0_on_a_good_one(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "no completion here"}\nnot json at all\n')
    result = _cli("validate", "--data", bad)
    assert result.returncode == 1
    assert json.loads(result.stdout)["usable"] is False
    good = _write_jsonl(tmp_path / "good.jsonl", [{"text": "hello", "label": "a"}, {"text": "hi", "label": "a"},
                                                    {"text": "bye", "label": "b"}, {"text": "ciao", "label": "b"}])
    report = _json(_cli("validate", "--data", good))
    assert report["usable"] is True and report["format"] == "classification"


@pytest.mark.slow
def test_causal_lm_train_merge_generate_and_inspect_end_to_end(tmp_path, tiny_llama_dir):
    rows = [{"prompt": f"Say {word}:", "completion": f" {word} {word}"} for word in ("red", "blue", "green",
                                                                                   "gold", "pink", "gray")]
    data = _write_jsonl(tmp_path / "data.jsonl", rows * 3)
    out = tmp_path / "run"
    metrics = _json(_cli("train", "--model", tiny_llama_dir, "--data", data, "--out", out, "--max-steps", "3",
                         "--batch-size", "4", "--rank", "4", "--eval-fraction", "0.2"))
    assert metrics["steps"] == 3 and len(metrics["history"]) == 3
    saved = json.loads((out / "metrics.json").read_text())
    for key in ("trainable_params", "total_params", "adapter_bytes", "base_model_bytes", "base_eval",
                "final_eval", "train_tokens", "train_runtime_s", "steps", "padding_fraction", "history"):
        assert key in saved, key
    assert saved["final_eval"]["eval_loss"] > 0
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert any((out / "checkpoints").iterdir())

    merged = tmp_path / "merged"
    _json(_cli("merge", "--model", tiny_llama_dir, "--adapter", out / "adapter", "--out", merged))
    assert (merged / "config.json").is_file()

    generated = _json(_cli("generate", "--model", tiny_llama_dir, "--adapter", out / "adapter", "--prompt",
                           "Say red:", "--max-new-tokens", "5", "--temperature", "0"))
    assert isinstance(generated["text"], str)

    inspected = _json(_cli("inspect", "--model", tiny_llama_dir))
    assert inspected["model_type"] == "llama"


@pytest.mark.slow
def test_classification_train_with_merge_then_classify_with_the_adapter(tmp_path, tiny_bert_dir):
    rows = [{"text": f"{word} number {i}", "label": word} for i in range(6) for word in ("refund", "crash")]
    data = _write_jsonl(tmp_path / "tickets.jsonl", rows)
    out = tmp_path / "run"
    # no --task: a classification file trains a classifier
    metrics = _json(_cli("train", "--model", tiny_bert_dir, "--data", data, "--out", out, "--max-steps", "3",
                         "--batch-size", "4", "--merge"))
    assert metrics["task"] == "classification"
    assert set(metrics["final_eval"]) >= {"eval_loss", "accuracy", "macro_f1", "confusion_matrix"}
    assert sorted(metrics["label_mapping"].values()) == ["crash", "refund"]
    assert (out / "merged" / "config.json").is_file()
    result = _json(_cli("classify", "--model", tiny_bert_dir, "--adapter", out / "adapter", "--text",
                        "refund number 9"))
    assert set(result["probabilities"]) == {"crash", "refund"}
    assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert result["label"] == max(result["probabilities"], key=result["probabilities"].get)
