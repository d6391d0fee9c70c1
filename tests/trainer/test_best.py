"""Best-checkpoint selection and early stopping, on real training runs of the tiny Llama: the adapter saved is
the one of the lowest periodic eval loss, and a run stops after `early_stopping_patience` evals without one."""
import json

import torch
from safetensors.torch import load_file

import tiny_models
from trainer.adapter_io import load_adapter
from trainer.best import BEST_DIR, WEIGHTS_FILE
from trainer.config import LoraSettings, TrainConfig
from trainer.train import train

WORDS = ["red", "blue", "green", "gold", "pink", "gray", "teal", "navy"]


def _config(tmp_path, model_dir, **changes):
    train_file, eval_file = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    train_file.write_text("".join(json.dumps({"prompt": f"Say {w}:", "completion": f" {w} {w} {w}"}) + "\n"
                                  for w in WORDS * 3))
    # Held-out answers unlike the training ones: the eval loss falls, then wanders as training overfits.
    eval_file.write_text("".join(json.dumps({"prompt": f"Say {w}:", "completion": " 0 1 2 3 4 5 6 7 8 9"}) + "\n"
                                 for w in WORDS))
    values = dict(model=str(model_dir), data=str(train_file), eval_data=str(eval_file), out=str(tmp_path / "run"),
                  batch_size=4, lr=3e-2, max_steps=24, eval_every=2,
                  lora=LoraSettings(rank=8, dropout=0.0, targets="attention+mlp"))
    return TrainConfig(**{**values, **changes})


def test_early_stopping_ends_the_run_and_the_best_evals_adapter_is_saved(tmp_path, tiny_llama_dir):
    metrics = train(_config(tmp_path, tiny_llama_dir, early_stopping_patience=2))
    losses = {entry["step"]: entry["eval_loss"] for entry in metrics["eval_history"]}
    best_step = min(losses, key=losses.get)
    assert metrics["stop_reason"] == "early_stopping" and metrics["steps"] < metrics["total_steps"]
    assert metrics["keep"] == "best" and metrics["best_step"] == metrics["kept_step"] == best_step
    # it stopped at the second eval in a row that did not beat the best
    assert sorted(losses)[-3] == best_step and max(losses) == metrics["steps"]
    # the saved adapter is the best step's: its eval loss, and the weights written when that eval was best
    assert abs(metrics["final_eval"]["eval_loss"] - losses[best_step]) < 1e-5
    model, _ = tiny_models.tiny_llama()
    load_adapter(model, tmp_path / "run" / "adapter")
    kept = load_file(str(tmp_path / "run" / BEST_DIR / WEIGHTS_FILE))
    for name, param in model.named_parameters():
        if "lora_" in name:
            torch.testing.assert_close(param, kept[name], rtol=0, atol=0)


def test_keep_last_saves_the_last_steps_adapter_and_runs_every_step(tmp_path, tiny_llama_dir):
    metrics = train(_config(tmp_path, tiny_llama_dir, keep="last", max_steps=12))
    losses = {entry["step"]: entry["eval_loss"] for entry in metrics["eval_history"]}
    assert metrics["stop_reason"] == "completed" and metrics["steps"] == 12
    assert metrics["keep"] == "last" and metrics["kept_step"] == 12
    assert metrics["best_step"] in [*losses, 12]
    assert not (tmp_path / "run" / BEST_DIR).exists()
