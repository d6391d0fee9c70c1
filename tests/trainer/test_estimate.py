"""The torch-free estimate gives the same numbers as counting a real model's parameters."""
import subprocess
import sys

import pytest

import tiny_models
from trainer.config import LoraSettings
from trainer.estimate import estimate
from trainer.inject import apply_lora
from trainer.inspect_model import inspect
from trainer.params import parameter_report

CASES = [("llama", "causal-lm", "attention+mlp", 8), ("gpt2", "causal-lm", "attention", 4),
         ("gpt_neox", "causal-lm", "all-linear", 2), ("bert", "classification", "attention", 4),
         ("llama", "causal-lm", "re:.*\\.1\\..*(q|v)_proj", 16)]


@pytest.mark.parametrize("kind,task,targets,rank", CASES)
def test_estimate_equals_parameter_report_on_the_real_model(tmp_path, kind, task, targets, rank):
    folder = tiny_models.save_tiny(kind, tmp_path)
    estimated = estimate(inspect(str(folder), task=task), targets=targets, rank=rank, task=task)

    model, _ = tiny_models.BUILDERS[kind]()
    handle = apply_lora(model, LoraSettings(rank=rank, targets=targets), task)
    report = parameter_report(model)
    for key in ("total", "trainable", "adapter_bytes", "base_model_bytes"):
        assert estimated[key] == report[key], key
    assert estimated["percent"] == pytest.approx(report["percent"])
    assert estimated["ratio"] == pytest.approx(report["ratio"])
    assert estimated["target_modules"] == sorted(handle.target_modules)


def test_a_datasets_label_count_sizes_the_new_classifier_head(tmp_path):
    folder = tiny_models.save_tiny("bert", tmp_path)  # inspected with its own 3-label head
    labels = ["a", "b", "c", "d", "e", "f", "g"]
    estimated = estimate(inspect(str(folder), task="classification"), targets="attention", rank=4,
                         task="classification", num_labels=len(labels))

    model, _ = tiny_models.tiny_bert(labels=labels)
    apply_lora(model, LoraSettings(rank=4, targets="attention"), "classification")
    report = parameter_report(model)
    for key in ("total", "trainable", "adapter_bytes", "base_model_bytes"):
        assert estimated[key] == report[key], key


def test_memory_estimate_adds_weights_optimizer_state_and_activations(tmp_path):
    info = inspect(str(tiny_models.save_tiny("llama", tmp_path)), task="causal-lm")
    small = estimate(info, targets="attention", rank=8, batch_size=2, max_length=64)
    big = estimate(info, targets="attention", rank=8, batch_size=4, max_length=64)
    memory = small["memory"]
    lora = small["trainable"]
    assert memory["weights"] == small["base_model_bytes"] + 4 * lora
    assert memory["adapter_and_optimizer"] == 3 * 4 * lora
    assert memory["total"] == memory["weights"] + memory["adapter_and_optimizer"] + memory["activations"]
    assert big["memory"]["activations"] == 2 * memory["activations"]


def test_estimate_never_imports_torch():
    code = ("import sys, trainer.estimate, trainer.targets; "
            "sys.exit(1 if any(m == 'torch' or m.startswith('torch.') for m in sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
