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
                                      "--rslora", "--max-steps", "7", "--lr", "1e-3", "--packing",
                                      "--quantize", "nf4", "--dtype", "bf16"])
    config = config_from_args(args)
    assert config == TrainConfig(model="m", data="d.jsonl", out="o", max_steps=7, lr=1e-3, packing=True,
                                 quantize="nf4", dtype="bf16", lora=LoraSettings(rank=4, rslora=True))
    unset = config_from_args(build_parser().parse_args(["train", "--model", "m", "--data", "d", "--out", "o"]))
    assert (unset.quantize, unset.dtype) == ("none", "auto")


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
    from trainer.inference import generate, load_for_inference

    model, tokenizer = load_for_inference(str(tiny_llama_dir), adapter_dir=out / "adapter")
    expected = generate(model, tokenizer, "Say red:", max_new_tokens=5, temperature=0)
    assert generated["text"] == expected and expected.strip() != ""  # greedy: the same text in-process

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


def test_train_help_shows_every_flag_with_the_config_default():
    result = _cli("train", "--help")
    assert result.returncode == 0
    lines = " ".join(result.stdout.split())  # argparse wraps long help lines
    for flag, default in (("--rank RANK", "default: 8"), ("--alpha ALPHA", "default: 16.0"),
                          ("--lr LR", "default: 0.0002"), ("--batch-size BATCH_SIZE", "default: 8"),
                          ("--eval-every EVAL_EVERY", "default: 0"), ("--checkpoint-every CHECKPOINT_EVERY",
                                                                      "default: 50"),
                          ("--max-length MAX_LENGTH", "default: 512"), ("--packing", "default: off"),
                          ("--quantize {none,nf4,int8}", "default: none"),
                          ("--dtype {auto,fp32,bf16,fp16}", "default: auto")):
        assert f"{flag} " in lines and lines.split(f"{flag} ", 1)[1].split(" --")[0].endswith(default), flag
    for name in ("--model", "--data", "--out", "--task", "--format", "--eval-data", "--eval-fraction", "--dropout",
                 "--targets", "--rslora", "--epochs", "--max-steps", "--grad-accum", "--warmup", "--seed",
                 "--merge", "--resume"):
        assert f"[{name}" in lines or f" {name} " in lines, name


def test_generate_flags_and_the_library_share_one_set_of_sampling_defaults():
    import inspect

    from trainer.config import GENERATION_DEFAULTS
    from trainer.inference import stream_generate

    args = build_parser().parse_args(["generate", "--model", "m", "--prompt", "p"])
    library = inspect.signature(stream_generate).parameters
    for name, value in GENERATION_DEFAULTS.items():
        assert getattr(args, name) == library[name].default == value, name
    assert GENERATION_DEFAULTS["top_p"] == 0.95 and GENERATION_DEFAULTS["repetition_penalty"] == 1.0


def test_validate_counts_tokens_with_the_model_and_applies_task_format_and_max_length(tmp_path, tiny_llama_dir):
    rows = [{"prompt": "Say red:", "completion": " red"}, {"prompt": "Say blue:", "completion": " blue " * 10},
            {"prompt": "Say gold:"}]
    data = _write_jsonl(tmp_path / "pc.jsonl", rows)
    result = _cli("validate", "--data", data, "--model", tiny_llama_dir, "--task", "causal-lm", "--format",
                  "prompt_completion", "--max-length", "16")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["format"] == "prompt_completion" and report["task"] == "causal-lm"
    assert report["max_length"] == 16 and report["truncated_rows"] == 1
    # The byte-level tokenizer: one token a byte, plus EOS; counted, not estimated.
    assert report["token_stats"]["estimated"] is False
    assert report["token_stats"]["min"] == len("Say red: red") + 1
    assert report["token_stats"]["max"] == len("Say blue:" + " blue " * 10) + 1
    assert [(p["row"], p["field"]) for p in report["problems"]] == [(3, "completion")]
    # A classification task cannot train on prompt/completion rows: unusable, exit 1.
    refused = _cli("validate", "--data", data, "--task", "classification", "--format", "prompt_completion")
    assert refused.returncode == 1 and json.loads(refused.stdout)["usable"] is False


@pytest.mark.slow
def test_train_with_a_separate_eval_file_and_regex_targets(tmp_path, tiny_llama_dir):
    words = ("red", "blue", "green", "gold", "pink", "gray")
    data = _write_jsonl(tmp_path / "train.jsonl", [{"prompt": f"Say {w}:", "completion": f" {w}"} for w in words])
    held_out = _write_jsonl(tmp_path / "eval.jsonl", [{"prompt": "Say teal:", "completion": " teal"},
                                                      {"prompt": "Say navy:", "completion": " navy"},
                                                      {"prompt": "Say plum:", "completion": " plum"}])
    metrics = _json(_cli("train", "--model", tiny_llama_dir, "--data", data, "--out", tmp_path / "run",
                         "--eval-data", held_out, "--targets", r"re:.*layers\.0\.self_attn\.(q|v)_proj",
                         "--max-steps", "2", "--batch-size", "2", "--rank", "2"))
    assert metrics["train_examples"] == 6 and metrics["eval_examples"] == 3  # nothing split off the training file
    assert metrics["final_eval"]["eval_tokens"] == sum(len(f" {w}") + 1 for w in ("teal", "navy", "plum"))
    assert metrics["target_modules"] == ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj"]
    saved = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert saved["target_modules"] == metrics["target_modules"]


def test_a_model_that_is_nowhere_exits_2_with_one_line_on_stderr(tmp_path):
    env_home = tmp_path / "hf"
    result = subprocess.run([sys.executable, "-m", "trainer", "inspect", "--model", "someone/no-such-model"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(env_home),
                                 "PYTHONPATH": str(ROOT)})
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("error: model 'someone/no-such-model' is neither a local folder nor in the "
                               "Hugging Face cache")
