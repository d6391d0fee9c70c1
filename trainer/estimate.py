"""What a LoRA job will train and roughly how much memory it needs, from a base model's recorded shapes.

Pure Python (never imports torch): the web app calls it while a person fills in the job form. The input is
`trainer.inspect_model.inspect(...)`'s dict (linear layers with shapes, total parameters, dtype, sizes);
the parameter numbers equal `trainer.params.parameter_report` on the real model (the tests keep them equal),
because target selection runs through the same `trainer.targets.match_targets`.

Peak training memory is an estimate (bytes), the sum of
- weights: every base parameter, at the checkpoint's dtype;
- LoRA weights, their gradients and AdamW's two moment buffers: 4 x trainable parameters x 4 bytes
  (the classifier head is counted the same way: it is trained in float32 too);
- activations kept for the backward pass: batch x length tokens, per layer about ACTIVATION_VALUES x hidden
  values plus one attention-probability row per head (length values), plus what each LoRA layer saves
  (its input and its r-wide projection); for causal LMs the logits, their softmax and gradient
  (3 x vocabulary values per token). Values are 4 bytes (float32 on CPU; an overestimate under bf16 autocast).
"""
from __future__ import annotations

from trainer.targets import CLASSIFIER_HEADS, has_suffix, is_head, match_targets

ACTIVATION_VALUES = 18  # per token, per layer, in units of hidden size: norms, q/k/v, MLP, residuals
ADAPTER_BYTES = 4  # LoRA weights are float32 (see trainer.lora)
HEAD_DIM = 64  # to guess the number of attention heads from the hidden size
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}


def estimate(info: dict, *, targets: str, rank: int, task: str | None = None, batch_size: int = 8,
             max_length: int = 512, num_labels: int | None = None) -> dict:
    """Parameter counts (as `parameter_report`) plus `memory`: {weights, adapter_and_optimizer,
    activations, total} in bytes, for LoRA of `rank` on `targets` of the model `info` describes.

    For classification, `num_labels` (the dataset's label count) sizes the new head's output layer; without it,
    the head is counted as the inspected model has it."""
    task = task or info.get("task", "causal-lm")
    dtype_bytes = DTYPE_BYTES.get(info.get("dtype", "float32"), 4)
    layers = info["linear_layers"]
    if task == "classification" and num_labels:
        layers = _with_label_count(layers, num_labels)
    candidates = [layer for layer in layers if not _is_head_layer(layer)]
    chosen = set(match_targets([layer["name"] for layer in candidates], info.get("model_type"), targets))
    adapted = [layer for layer in candidates if layer["name"] in chosen]
    lora = sum(rank * (layer["in_features"] + layer["out_features"]) for layer in adapted)
    head = _head_total(layers, task)

    base_params = info["total_params"] - _head_total(info["linear_layers"], task) + head
    total = base_params + lora
    trainable = lora + head
    adapter_bytes = lora * ADAPTER_BYTES + head * dtype_bytes
    base_bytes = base_params * dtype_bytes
    weights = base_bytes + lora * ADAPTER_BYTES
    optimizer = 3 * trainable * 4  # gradients + AdamW exp_avg + exp_avg_sq, float32
    activations = _activation_bytes(info, adapted, rank, task, batch_size * max_length, max_length)
    return {
        **parameter_summary(total, trainable, adapter_bytes, base_bytes),
        "target_modules": sorted(chosen),
        "memory": {"weights": weights, "adapter_and_optimizer": optimizer, "activations": activations,
                   "total": weights + optimizer + activations},
    }


def _with_label_count(layers: list[dict], num_labels: int) -> list[dict]:
    """`layers` with the head's last layer (the one that outputs one score per label) giving `num_labels`."""
    last = max((i for i, layer in enumerate(layers) if _is_classifier(layer)), default=None)
    if last is None:
        return layers
    return [*layers[:last], {**layers[last], "out_features": num_labels}, *layers[last + 1:]]


def _head_total(layers: list[dict], task: str) -> int:
    return sum(_head_params(layer) for layer in layers if _is_classifier(layer)) if task == "classification" else 0


def _is_head_layer(layer: dict) -> bool:
    return bool(layer.get("head")) or is_head(layer["name"])


def _is_classifier(layer: dict) -> bool:
    return any(layer["name"] == name or layer["name"].startswith(name + ".") for name in CLASSIFIER_HEADS)


def _head_params(layer: dict) -> int:
    # transformers gives encoder heads ("classifier") a bias and decoder heads ("score") none.
    bias = layer.get("bias", not has_suffix(layer["name"], "score"))
    return layer["in_features"] * layer["out_features"] + (layer["out_features"] if bias else 0)


def _activation_bytes(info: dict, adapted: list[dict], rank: int, task: str, tokens: int, length: int) -> int:
    hidden = info.get("hidden_size") or 0
    num_layers = info.get("num_layers") or 0
    heads = max(1, hidden // HEAD_DIM)
    per_token = num_layers * (ACTIVATION_VALUES * hidden + heads * length)
    per_token += sum(layer["in_features"] + rank for layer in adapted)
    if task == "causal-lm":
        per_token += 3 * (info.get("vocab_size") or 0)
    return 4 * tokens * per_token


def parameter_summary(total: int, trainable: int, adapter_bytes: int, base_bytes: int) -> dict:
    """The parameter accounting both this estimate and `trainer.params.parameter_report` give."""
    return {
        "total": total,
        "trainable": trainable,
        "percent": 100.0 * trainable / total if total else 0.0,
        "adapter_bytes": adapter_bytes,
        "base_model_bytes": base_bytes,
        "ratio": adapter_bytes / base_bytes if base_bytes else 0.0,
    }
