"""What a LoRA job will train and how much memory it needs at its peak, from a base model's recorded shapes.

Pure Python (never imports torch): the web app calls it while a person fills in the job form, and at submit to
check that the job fits the worker class it asks for. The input is `trainer.inspect_model.inspect(...)`'s dict
(linear layers with shapes, total parameters, dtype, sizes); the parameter numbers equal
`trainer.params.parameter_report` on the real model (the tests keep them equal), because target selection runs
through the same `trainer.targets.match_targets`.

Peak memory (bytes) is what `metrics.json` calls `model_memory_bytes`: the run's peak minus what the process held
before the model loaded. It is the larger of the training step's and the evaluation's peak:
- weights: the block linears at `quantize` (nf4: 4 bits + double-quantized absmax, int8: 1 byte + a float32
  scale a row) or at the compute dtype; everything else (embeddings, norms, the output head) at the compute
  dtype; LoRA weights and a classifier head in float32;
- gradients and AdamW's two moments: 3 x trainable parameters x 4 bytes;
- activations kept for backward, per token and layer: BLOCK_VALUES x hidden + MLP_VALUES x intermediate values
  (a gated MLP keeps two more), plus what each LoRA layer saves (its input, its r-wide projection, a 1-byte
  dropout mask), plus ATTENTION_SCORE_COPIES x heads x length score values where the attention probabilities
  are materialised: the eager attention, or PyTorch's math SDPA that a CPU uses for attention dropout in
  training (the CUDA kernels fuse dropout and keep no scores). With gradient checkpointing only each layer's
  input is kept, and one layer is recomputed (CHECKPOINT_LAYERS of its activations live at once);
- the backward pass's working set: BACKWARD_LAYERS of one layer's activations on top;
- the causal-LM loss: full logits with their softmax and gradient (3 x vocabulary values a token) unless the
  architecture computes it from the hidden states (`hidden_state_loss`: 32 MiB chunks);
- evaluation runs batches of EVAL_BATCH_FACTOR x batch_size without keeping activations: one layer's working set.
Activations are in the compute dtype: `dtype` fp32/bf16/fp16, and "auto" is bf16 on CUDA, fp32 on a CPU.
The constants were fitted to `benchmarks/memory_estimate.py`'s measurements on a CPU (see README).
"""
from __future__ import annotations

import math

from trainer.targets import CLASSIFIER_HEADS, has_suffix, is_head, match_targets

# Saved for backward, per token and layer, in (hidden sizes, intermediate sizes) of compute-dtype values, LoRA's
# own saved tensors apart. Counted with torch.autograd.graph.saved_tensors_hooks on BERT and Llama blocks.
BLOCK_VALUES = (5, 1)  # layer norms, dropout masks, attention output; the MLP activation's input
GATED_BLOCK_VALUES = (8, 3)  # RMS norms in fp32, q/k/v/out of SDPA; gate, up and act(gate) of a gated MLP
ATTENTION_SCORE_COPIES = 3  # scores, softmax and dropped probabilities, in compute-dtype values
SCORE_MASK_BYTES = 1  # attention dropout's mask, per score
CHECKPOINT_LAYERS = 2.2  # of one layer's activations, live while a checkpointed layer is recomputed
BACKWARD_LAYERS = 0.35  # of one layer's activations, the backward pass's gradients in flight
EVAL_BATCH_FACTOR = 2  # trainer.evaluate.EVAL_BATCH_SIZE_FACTOR
EVAL_VALUES = (4, 2)  # per token in eval, one layer's tensors in flight (hidden sizes, intermediate sizes)
LOSS_CHUNK_BYTES = 2 * (1 << 25)  # trainer.lm_loss: a 32 MiB float32 logits chunk and its log-softmax
# On a CPU the peak is resident memory, which follows the tensors: a run fixes glibc's mmap threshold
# (trainer.cpu_allocator), so freed activations and dequantized weights are returned at once, not kept in a heap,
# and bitsandbytes is imported before the run's memory mark. A quantized base keeps one layer's dequantized
# weight at a time, on a CPU as on a GPU.
ADAPTER_BYTES = 4  # LoRA weights are float32 (see trainer.lora)
HEAD_DIM = 64  # to guess the number of attention heads from the hidden size
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}
COMPUTE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
QUANTIZED_WEIGHT_BYTES = {"nf4": (4 + 8 / 64 + 32 / (64 * 256)) / 8, "int8": 1.0}  # per weight
# Per NF4 layer: the code tables of its 16 NF4 values and of the double quantization's 256 levels, an offset.
NF4_LAYER_BYTES = 4 * (16 + 256 + 1)
GATE_NAMES = ("gate_proj", "gate_up_proj", "w1", "dense_h_to_4h_gate")
# Model types whose attention dropout is on by default, for models inspected before it was recorded.
DROPOUT_ATTENTION_TYPES = ("bert", "roberta", "xlm-roberta", "distilbert", "electra", "deberta-v2", "gpt2")


def estimate(info: dict, *, targets: str, rank: int, task: str | None = None, batch_size: int = 8,
             max_length: int = 512, num_labels: int | None = None, quantize: str = "none", dtype: str = "auto",
             gradient_checkpointing: bool = False, device: str = "cuda") -> dict:
    """Parameter counts (as `parameter_report`) plus `memory`: {weights, adapter_and_optimizer, activations,
    evaluation, total, compute_dtype, quantize} in bytes, for LoRA of `rank` on `targets` of the model `info`
    describes, trained at `batch_size` x `max_length` tokens with the base in `quantize` / `dtype` on `device`
    ("cuda" or "cpu"; `dtype` "auto" means bf16 on CUDA, fp32 on a CPU, as in training).

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
    compute = compute_dtype(dtype, device)
    shape = _Shape(info, adapted, rank, task, COMPUTE_BYTES[compute], device)
    weights = math.ceil(_weight_bytes(base_params - head, candidates, quantize, COMPUTE_BYTES[compute])) \
        + trainable * ADAPTER_BYTES
    dequantized = math.ceil(_dequantized_bytes(candidates, quantize, COMPUTE_BYTES[compute]))
    optimizer = 3 * trainable * 4  # gradients + AdamW exp_avg + exp_avg_sq, float32
    activations = shape.training(batch_size, max_length, gradient_checkpointing) + dequantized
    evaluation = shape.evaluation(EVAL_BATCH_FACTOR * batch_size, max_length) + dequantized
    return {
        **parameter_summary(total, trainable, adapter_bytes, base_bytes),
        "target_modules": sorted(chosen),
        "memory": {"weights": weights, "adapter_and_optimizer": optimizer, "activations": activations,
                   "evaluation": evaluation, "total": weights + optimizer + max(activations, evaluation),
                   "compute_dtype": compute, "quantize": quantize},
    }


def compute_dtype(dtype: str, device: str) -> str:
    """The dtype a job's base computes in: `dtype`, where "auto" is bf16 on CUDA and fp32 elsewhere."""
    if dtype == "auto":
        return "bf16" if device == "cuda" else "fp32"
    return dtype


def _weight_bytes(frozen_params: int, candidates: list[dict], quantize: str, compute_bytes: int) -> float:
    """The frozen base: block linears quantized (or not), the rest in the compute dtype."""
    if quantize not in QUANTIZED_WEIGHT_BYTES:
        return frozen_params * compute_bytes
    linear = sum(layer["in_features"] * layer["out_features"] for layer in candidates)
    if quantize == "int8":
        per_layer = 4 * sum(layer["out_features"] for layer in candidates)  # a float32 scale a row
    else:
        per_layer = NF4_LAYER_BYTES * len(candidates)
    return linear * QUANTIZED_WEIGHT_BYTES[quantize] + per_layer + (frozen_params - linear) * compute_bytes


def _dequantized_bytes(candidates: list[dict], quantize: str, compute_bytes: int) -> float:
    """What a quantized base adds while it computes: its biggest layer dequantized; nothing unquantized."""
    if quantize not in QUANTIZED_WEIGHT_BYTES or not candidates:
        return 0
    return max(layer["in_features"] * layer["out_features"] * compute_bytes for layer in candidates)


class _Shape:
    """Activation memory of one model: per token and layer, and for the attention scores."""

    def __init__(self, info: dict, adapted: list[dict], rank: int, task: str, value_bytes: int, device: str):
        self.hidden = info.get("hidden_size") or 0
        self.layers = info.get("num_layers") or 0
        self.heads = info.get("num_heads") or max(1, self.hidden // HEAD_DIM)
        intermediate = info.get("intermediate_size") or 4 * self.hidden
        names = [layer["name"] for layer in info["linear_layers"]]
        gated = any(has_suffix(name, gate) for name in names for gate in GATE_NAMES)
        hidden_values, mlp_values = GATED_BLOCK_VALUES if gated else BLOCK_VALUES
        self.bytes = value_bytes
        # LoRA layers save their input and r-wide projection, and a 1-byte dropout mask (spread over the layers).
        # The fused node keeps less (one input for q/k/v, none for o_proj), but counting that exactly leaves
        # the bf16 runs under their measurement (README, the estimate-vs-measured table), so this stays.
        lora = sum((layer["in_features"] + rank) * value_bytes + layer["in_features"] for layer in adapted)
        self.per_token = (value_bytes * (hidden_values * self.hidden + mlp_values * intermediate)
                          + lora / max(1, self.layers))
        self.eval_per_token = value_bytes * (EVAL_VALUES[0] * self.hidden + EVAL_VALUES[1] * intermediate)
        if device == "cpu":  # the CPU's math SDPA upcasts bf16/fp16 scores to float32
            self.per_score = ATTENTION_SCORE_COPIES * 4 + SCORE_MASK_BYTES
        else:
            self.per_score = ATTENTION_SCORE_COPIES * value_bytes + SCORE_MASK_BYTES
        dropout = info.get("attention_dropout")
        if dropout is None:
            dropout = 0.1 if info.get("model_type") in DROPOUT_ATTENTION_TYPES else 0.0
        eager = info.get("attention") == "eager"
        self.scores_in_training = eager or (device == "cpu" and dropout > 0)
        self.scores_in_eval = eager
        self.task = task
        self.vocab = info.get("vocab_size") or 0
        self.hidden_state_loss = bool(info.get("hidden_state_loss"))

    def training(self, batch_size: int, length: int, checkpointing: bool) -> int:
        tokens = batch_size * length
        scores = batch_size * self.heads * length * length if self.scores_in_training else 0
        layer = tokens * self.per_token + scores * self.per_score
        if checkpointing:  # each layer's input kept, one layer recomputed at a time
            kept = self.layers * tokens * self.hidden * self.bytes + CHECKPOINT_LAYERS * layer
        else:
            kept = self.layers * layer + BACKWARD_LAYERS * layer
        return math.ceil(kept + self._loss(tokens))

    def evaluation(self, batch_size: int, length: int) -> int:
        tokens = batch_size * length
        scores = batch_size * self.heads * length * length * 2 * self.bytes if self.scores_in_eval else 0
        return math.ceil(tokens * self.eval_per_token + scores + self._loss(tokens))

    def _loss(self, tokens: int) -> float:
        if self.task != "causal-lm":
            return 0
        if self.hidden_state_loss:  # the hidden states gathered, their gradient, and one chunk of logits
            return 2 * tokens * self.hidden * self.bytes + LOSS_CHUNK_BYTES
        return 3 * tokens * self.vocab * 4  # full logits, their softmax and gradient, in float32


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


def memory_fixes(settings: dict) -> list[tuple[str, dict]]:
    """The changes that lower a job's peak memory, in the order to try them: [(advice, changed settings)].
    `settings` holds batch_size, grad_accum, quantize and gradient_checkpointing (TrainConfig's names).
    Halving the batch doubles grad-accum, so the effective batch stays the same."""
    fixes = []
    if settings.get("quantize", "none") != "nf4":
        fixes.append(("use nf4", {"quantize": "nf4"}))
    batch, accum = settings.get("batch_size", 1), settings.get("grad_accum", 1)
    if batch > 1:
        fixes.append((f"batch {batch // 2} with grad-accum {accum * 2}",
                      {"batch_size": batch // 2, "grad_accum": accum * 2}))
    if not settings.get("gradient_checkpointing"):
        fixes.append(("turn on gradient checkpointing", {"gradient_checkpointing": True}))
    return fixes


def out_of_memory_advice(settings: dict) -> str:
    """What to change after running out of memory: every fix of `memory_fixes`, as one sentence."""
    fixes = [advice for advice, _ in memory_fixes(settings)]
    if not fixes:
        return f"lower max_length (now {settings.get('max_length')}) or rank, or use a worker with more memory"
    return _either(fixes) + f", or lower max_length (now {settings.get('max_length')})"


def fit_problem(info: dict, settings: dict, capacity_bytes: int, device: str, *, targets: str,
                num_labels: int | None = None) -> str | None:
    """None when the job `settings` describe fits in `capacity_bytes` on `device`; else why not and the fixes
    that make it fit, each with its estimate ("use nf4 (about 5.2 GB)"). The fixes are tried alone, a smaller
    batch halved until it fits, then all together."""
    def peak(changes: dict) -> int:
        merged = {**settings, **changes}
        return estimate(info, targets=targets, rank=merged["rank"], task=merged.get("task"),
                        batch_size=merged["batch_size"], max_length=merged["max_length"], num_labels=num_labels,
                        quantize=merged.get("quantize", "none"), dtype=merged.get("dtype", "auto"),
                        gradient_checkpointing=bool(merged.get("gradient_checkpointing")),
                        device=device)["memory"]["total"]

    needed = peak({})
    if needed <= capacity_bytes:
        return None
    working = []
    for advice, changes in memory_fixes(settings):
        if "batch_size" in changes:
            advice, changes = _smallest_batch_that_fits(settings, peak, capacity_bytes) or (advice, changes)
        estimate_bytes = peak(changes)
        if estimate_bytes <= capacity_bytes:
            working.append(f"{advice} (about {readable_bytes(estimate_bytes)})")
    combined = {"quantize": "nf4", "gradient_checkpointing": True, "batch_size": 1,
                "grad_accum": settings.get("grad_accum", 1) * settings["batch_size"]}
    head = (f"this job needs about {readable_bytes(needed)} at its peak, more than the "
            f"{readable_bytes(capacity_bytes)} its worker offers")
    if working:
        return f"{head}: {_either(working)}"
    if peak(combined) <= capacity_bytes:
        return (f"{head}: use nf4, batch 1 with grad-accum {combined['grad_accum']} and gradient checkpointing "
                f"together (about {readable_bytes(peak(combined))})")
    return (f"{head}, and still about {readable_bytes(peak(combined))} with nf4, batch 1 and gradient "
            f"checkpointing: lower max_length (now {settings['max_length']}) or pick a worker class with more memory")


def _smallest_batch_that_fits(settings: dict, peak, capacity_bytes: int) -> tuple[str, dict] | None:
    """The biggest halved batch (grad-accum doubled each time) whose estimate fits, as (advice, changes)."""
    batch, accum = settings["batch_size"], settings.get("grad_accum", 1)
    while batch > 1:
        batch, accum = batch // 2, accum * 2
        changes = {"batch_size": batch, "grad_accum": accum}
        if peak(changes) <= capacity_bytes:
            return f"batch {batch} with grad-accum {accum}", changes
    return None


def _either(options: list[str]) -> str:
    return options[0] if len(options) == 1 else ", ".join(options[:-1]) + " or " + options[-1]


def readable_bytes(n: float) -> str:
    """"12.3 GB", or "456 MB" under a gigabyte."""
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"
