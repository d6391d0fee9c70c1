"""The torch-free estimate gives the same numbers as counting a real model's parameters, its weight memory is what a
loaded base (plain, bf16, NF4, int8) really stores, and a job that will not fit is told which changes make it fit."""
import subprocess
import sys

import pytest
import torch

import tiny_models
from trainer.config import LoraSettings
from trainer.estimate import estimate, fit_problem, out_of_memory_advice, readable_bytes
from trainer.inject import apply_lora
from trainer.inspect_model import inspect
from trainer.models import load_model
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


def test_memory_estimate_adds_weights_optimizer_state_and_the_larger_of_training_and_eval(tmp_path):
    info = inspect(str(tiny_models.save_tiny("llama", tmp_path)), task="causal-lm")
    small = estimate(info, targets="attention", rank=8, batch_size=2, max_length=64, dtype="fp32")
    memory = small["memory"]
    lora = small["trainable"]
    assert memory["weights"] == small["base_model_bytes"] + 4 * lora  # a float32 checkpoint, computed in fp32
    assert memory["adapter_and_optimizer"] == 3 * 4 * lora
    assert memory["total"] == (memory["weights"] + memory["adapter_and_optimizer"]
                               + max(memory["activations"], memory["evaluation"]))
    assert estimate(info, targets="attention", rank=8, batch_size=2, max_length=64)["memory"]["compute_dtype"] \
        == "bf16"  # "auto" on a GPU


def test_longer_rows_bigger_batches_and_no_checkpointing_cost_more_activation_memory(minilm_dir):
    info = inspect("demo/minilm-l6", task="classification", num_labels=4)  # 6 layers, attention dropout 0.1

    def activations(**settings):
        values = {"batch_size": 8, "max_length": 128, "device": "cpu", **settings}
        return estimate(info, targets="attention", rank=8, task="classification", **values)["memory"]["activations"]
    assert activations(batch_size=16) == pytest.approx(2 * activations(), rel=1e-6)
    # Attention dropout on a CPU keeps (batch, heads, length, length) scores: length squared, not linear.
    assert activations(max_length=256) > 2.5 * activations()
    # Fused CUDA kernels keep no scores: the CPU's extra is three float32 copies and a 1-byte mask per score, in
    # each of the 6 layers and the backward pass's share of one.
    scores = 8 * info["num_heads"] * 128 ** 2 * (3 * 4 + 1) * (info["num_layers"] + 0.35)
    assert activations() - activations(device="cuda", dtype="fp32") == pytest.approx(scores, rel=1e-6)
    assert activations(gradient_checkpointing=True) < activations() / 2
    assert activations(dtype="bf16") < activations()


BIGGER_LLAMA = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=4, max_position_embeddings=128, tie_word_embeddings=False)


@pytest.fixture(scope="module")
def bigger_llama_dir(tmp_path_factory):
    """Block linears of 256 x 256 and up: bitsandbytes' per-layer constants (its NF4 code table) are noise."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("bigger-llama")
    tokenizer = tiny_models.tiny_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **BIGGER_LLAMA)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def stored_bytes(model) -> int:
    """Bytes of every parameter and buffer, with bitsandbytes' quantization state (absmax, nested absmax, code
    tables of NF4; the row scales of int8)."""
    tensors = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        tensors[tensor.data_ptr()] = tensor
        state = getattr(tensor, "quant_state", None)
        for part in (state, getattr(state, "state2", None)):
            for name in ("absmax", "code", "offset"):
                extra = getattr(part, name, None)
                if isinstance(extra, torch.Tensor):
                    tensors[extra.data_ptr()] = extra
        scales = getattr(tensor, "SCB", None)
        if isinstance(scales, torch.Tensor):
            tensors[scales.data_ptr()] = scales
    return sum(t.numel() * t.element_size() for t in tensors.values())


@pytest.mark.parametrize("dtype,quantize", [("fp32", "none"), ("bf16", "none"), ("fp32", "nf4"), ("bf16", "int8")])
def test_weight_memory_is_what_the_loaded_base_and_adapter_store(bigger_llama_dir, dtype, quantize):
    info = inspect(str(bigger_llama_dir), task="causal-lm")
    memory = estimate(info, targets="attention", rank=8, dtype=dtype, quantize=quantize, device="cpu")["memory"]

    model, _ = load_model(str(bigger_llama_dir), "causal-lm", dtype=dtype, quantize=quantize)
    apply_lora(model, LoraSettings(rank=8, targets="attention"), "causal-lm")
    assert memory["weights"] == pytest.approx(stored_bytes(model), rel=0.01)


def test_a_job_that_fits_has_no_problem_and_one_that_does_not_gets_the_fixes_that_fit(bigger_llama_dir):
    info = inspect(str(bigger_llama_dir), task="causal-lm")
    settings = {"rank": 8, "batch_size": 16, "grad_accum": 1, "max_length": 128, "task": "causal-lm",
                "quantize": "none", "dtype": "auto", "gradient_checkpointing": False}

    def peak(**changes):
        merged = {**settings, **changes}
        return estimate(info, targets="attention", rank=8, task="causal-lm", batch_size=merged["batch_size"],
                        max_length=128, quantize=merged["quantize"],
                        gradient_checkpointing=merged["gradient_checkpointing"])["memory"]["total"]

    assert fit_problem(info, settings, peak(), "cuda", targets="attention") is None
    # Room for batch 8's peak: activations dominate at 16 x 128, so nf4 alone (smaller weights) does not fit.
    capacity = peak(batch_size=8) + 1
    fixes = {"use nf4": peak(quantize="nf4"), "batch 8 with grad-accum 2": peak(batch_size=8),
             "turn on gradient checkpointing": peak(gradient_checkpointing=True)}
    assert fixes["use nf4"] > capacity
    problem = fit_problem(info, settings, capacity, "cuda", targets="attention")
    assert problem.startswith(f"this job needs about {readable_bytes(peak())} at its peak, more than the "
                              f"{readable_bytes(capacity)} its worker offers: ")
    for advice, needed in fixes.items():
        assert (f"{advice} (about {readable_bytes(needed)})" in problem) == (needed <= capacity), advice

    hopeless = fit_problem(info, settings, 1000, "cuda", targets="attention")
    assert "with nf4, batch 1 and gradient checkpointing: lower max_length (now 128)" in hopeless


def test_out_of_memory_advice_names_every_fix_not_yet_taken():
    assert out_of_memory_advice({"batch_size": 8, "grad_accum": 2, "max_length": 512, "quantize": "none",
                                 "gradient_checkpointing": False}) == (
        "use nf4, batch 4 with grad-accum 4 or turn on gradient checkpointing, or lower max_length (now 512)")
    assert out_of_memory_advice({"batch_size": 1, "grad_accum": 1, "max_length": 64, "quantize": "nf4",
                                 "gradient_checkpointing": True}) == (
        "lower max_length (now 64) or rank, or use a worker with more memory")


def test_estimate_never_imports_torch():
    code = ("import sys, trainer.estimate, trainer.targets; "
            "sys.exit(1 if any(m == 'torch' or m.startswith('torch.') for m in sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
