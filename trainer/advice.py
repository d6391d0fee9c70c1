"""Settings that make a first job show a visible change: epochs, learning rate, rank (and alpha), targets, batch size
and max length, proposed from the dataset, the base model and the memory of the worker that will train it, each
with a one-line reason.

Pure Python (never imports torch): the web app fills in the new job form with it, and API jobs that ask for
"advised" defaults take its values for the settings they leave out.

The rules, and why:
- a run needs enough optimizer steps to move the adapter: the epochs are those that reach TARGET_STEPS for the
  task (between 1 and MAX_EPOCHS), so a 120-row set trains many epochs and a 50,000-row one a single pass; DPO
  needs fewer (DPO_TARGET_STEPS): its loss saturates within tens of steps, and further steps only push both
  answers down together;
- DPO alone only ranks the two answers: on the demo LM it makes the tuned model prefer the chosen ones but not
  write them (both answers' log-probabilities fall). An SFT term on the chosen answers (rpo_alpha, TRL's former
  knob of that name) keeps them likely; a small model needs it strong (SMALL_MODEL_RPO_ALPHA) and, with DPO's
  few steps, a larger learning rate (SMALL_MODEL_DPO_LR) before its greedy answers open like the chosen ones
  (on the demo LM, 70 such steps: tests/e2e/test_preference_path.py). Larger models get RPO's usual weight 1;
  SFT jobs get 0, which they ignore anyway;
- small models need large steps: the learning rate falls with the parameter count (LR_BY_SIZE);
- LoRA on a small model costs almost nothing, so rank 16 there; on big models 8, or 16 with plenty of data;
- a causal LM learns a style in its MLPs as much as in attention, so attention+mlp; a classifier trains its new
  head in full and needs only attention;
- the batch is the largest that still gives MIN_STEPS_PER_EPOCH steps an epoch and fits the worker's memory
  (trainer.estimate) with HEADROOM to spare;
- max length covers the longest row (the 95th percentile when a few rows are much longer), rounded up to a
  multiple of LENGTH_STEP and within the model's positions; a byte estimate of the lengths gets a margin, a wide
  one for a small vocabulary.
Checked on the demo models with datasets unlike the built-in samples (tests/trainer/test_advice.py, and the
browser path in tests/e2e/test_classification_path.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from trainer.estimate import estimate, readable_bytes

ADVISED_FIELDS = ("epochs", "lr", "rank", "alpha", "targets", "batch_size", "max_length", "rpo_alpha")
TARGET_STEPS = {"causal-lm": 150, "classification": 60}
DPO_TARGET_STEPS = 70
SMALL_MODEL_RPO_ALPHA, RPO_ALPHA = 10.0, 1.0
SMALL_MODEL_DPO_LR = 1e-2
MAX_EPOCHS = 20
MIN_STEPS_PER_EPOCH = 8
BATCH_SIZES = (16, 8, 4, 2, 1)
HEADROOM = 0.8  # of the worker's memory a job may plan to use
# (largest parameter count, learning rate), smallest models first; LoRA's usual 2e-4 suits billions of parameters.
LR_BY_SIZE = ((50_000_000, 2e-3), (500_000_000, 5e-4), (3_000_000_000, 3e-4), (math.inf, 2e-4))
SMALL_MODEL_PARAMS = 50_000_000
MANY_ROWS = 2000
LENGTH_STEP = 32
MAX_ADVISED_LENGTH = 2048
# bytes/4 (the validation's estimate without a tokenizer) undercounts: a little for the usual 30k+ vocabularies,
# by half for a small one (the demo LM's 2,048 tokens make about 2 bytes a token).
ESTIMATE_MARGIN, SMALL_VOCAB_MARGIN, SMALL_VOCAB = 1.25, 2.5, 8192
OUTLIER_FACTOR = 2  # a longest row over twice the 95th percentile is an outlier: cover the 95th percentile


@dataclass(frozen=True)
class Advice:
    value: object
    reason: str


def advise(info: dict, *, task: str, rows: int, token_stats: dict | None = None, eval_fraction: float = 0.1,
           num_labels: int | None = None, capacity: dict | None = None, method: str = "sft") -> dict[str, Advice]:
    """{setting: Advice} for every name in ADVISED_FIELDS, for training the model `info` describes
    (trainer.inspect_model's dict) for `task` on `rows` usable rows whose lengths `token_stats` gives
    (trainer.data.validate.token_stats), a share `eval_fraction` of them held out; `capacity` is the worker
    class's {"device", "memory_bytes"} (webapp.jobs.routing.class_capacity), None when unknown; `method` is the
    job's (sft or dpo)."""
    params = info.get("total_params") or 0
    train_rows = max(1, math.floor(rows * (1 - eval_fraction)))
    advice = {"max_length": _max_length(info, token_stats or {})}
    advice["rank"] = _rank(params, rows)
    advice["alpha"] = Advice(float(2 * advice["rank"].value), "twice the rank, the usual scaling")
    advice["targets"] = _targets(task)
    advice["lr"] = _dpo_lr(params) if method == "dpo" and params <= SMALL_MODEL_PARAMS else _lr(params)
    advice["rpo_alpha"] = _rpo_alpha(params, method)
    advice["batch_size"] = _batch_size(info, task, train_rows, advice, num_labels, capacity)
    advice["epochs"] = _epochs(target_steps(task, method), train_rows, advice["batch_size"].value)
    return {name: advice[name] for name in ADVISED_FIELDS}


def values(advice: dict[str, Advice]) -> dict:
    return {name: item.value for name, item in advice.items()}


def _max_length(info: dict, stats: dict) -> Advice:
    positions = min(info.get("max_positions") or MAX_ADVISED_LENGTH, MAX_ADVISED_LENGTH)
    longest, p95 = stats.get("max"), stats.get("p95")
    if not longest:
        length = min(512, positions)
        return Advice(length, f"no token lengths recorded for this dataset yet: {length}, a common choice")
    covered, what = (p95, "95 % of the rows") if longest > OUTLIER_FACTOR * p95 else (longest, "every row")
    margin = 1.0
    if stats.get("estimated"):
        margin = SMALL_VOCAB_MARGIN if (info.get("vocab_size") or SMALL_VOCAB) < SMALL_VOCAB else ESTIMATE_MARGIN
    length = min(positions, max(LENGTH_STEP, math.ceil(covered * margin / LENGTH_STEP) * LENGTH_STEP))
    measured = f"about {covered} × {margin:g} tokens (lengths estimated from bytes)" if margin > 1 \
        else f"{covered} tokens"
    if length == positions and covered * margin > positions:
        return Advice(length, f"{what} need {measured}; the model reads at most {positions}, longer rows are cut")
    return Advice(length, f"{what} fit in {measured}; no longer, since length costs time and memory")


def _rank(params: int, rows: int) -> Advice:
    if params and params <= SMALL_MODEL_PARAMS:
        return Advice(16, "a model this small makes even rank 16 cheap, and the extra width learns faster")
    if rows >= MANY_ROWS:
        return Advice(16, f"{rows:,} rows carry enough to use a wider update")
    return Advice(8, f"{rows:,} rows: rank 8 learns them without overfitting")


def _targets(task: str) -> Advice:
    if task == "classification":
        return Advice("attention", "the new classification head trains in full; attention adapters suffice")
    return Advice("attention+mlp", "a style or format is learned in the MLP layers as much as in attention")


def _lr(params: int) -> Advice:
    lr = next(rate for limit, rate in LR_BY_SIZE if params <= limit)
    size = f"{params / 1e6:.1f} M" if params < 1e9 else f"{params / 1e9:.1f} B"
    if lr > 2e-4:
        return Advice(lr, f"a {size}-parameter model needs larger steps than LoRA's usual 2e-4 to change visibly")
    return Advice(lr, f"LoRA's usual rate for a {size}-parameter model")


def _dpo_lr(params: int) -> Advice:
    return Advice(SMALL_MODEL_DPO_LR, f"DPO's few steps on a {params / 1e6:.1f} M-parameter model need larger ones "
                                      "still for the chosen answers' style to show")


def _rpo_alpha(params: int, method: str) -> Advice:
    if method != "dpo":
        return Advice(0.0, "only DPO jobs use it")
    if params <= SMALL_MODEL_PARAMS:
        return Advice(SMALL_MODEL_RPO_ALPHA, "a model this small needs a strong pull towards writing the chosen "
                                             "answers, or DPO only ranks them")
    return Advice(RPO_ALPHA, "RPO's usual weight: keeps the chosen answers likely while DPO ranks them")


def _batch_size(info: dict, task: str, train_rows: int, advice: dict, num_labels: int | None,
                capacity: dict | None) -> Advice:
    def peak(batch: int) -> int:
        return estimate(info, targets=advice["targets"].value, rank=advice["rank"].value, task=task,
                        batch_size=batch, max_length=advice["max_length"].value, num_labels=num_labels,
                        device=capacity["device"])["memory"]["total"]

    enough_steps = [b for b in BATCH_SIZES if b == 1 or train_rows / b >= MIN_STEPS_PER_EPOCH]
    if capacity is None or not info.get("linear_layers"):
        batch = enough_steps[0]
        return Advice(batch, f"the largest batch that still gives {MIN_STEPS_PER_EPOCH}+ steps an epoch over "
                             f"{train_rows:,} training rows")
    budget = HEADROOM * capacity["memory_bytes"]
    fitting = [b for b in enough_steps if peak(b) <= budget]
    if not fitting:
        return Advice(1, f"even batch 1 needs about {readable_bytes(peak(1))}, more than this worker's "
                         f"{readable_bytes(capacity['memory_bytes'])}: see the memory fixes")
    batch = fitting[0]
    limit = "its steps an epoch" if batch == enough_steps[0] else "the worker's memory"
    return Advice(batch, f"about {readable_bytes(peak(batch))} of the worker's "
                         f"{readable_bytes(capacity['memory_bytes'])}; {limit} bound it")


def target_steps(task: str, method: str = "sft") -> int:
    """The optimizer steps a first run of `method` on `task` should reach to show a visible change."""
    return DPO_TARGET_STEPS if method == "dpo" else TARGET_STEPS.get(task, TARGET_STEPS["causal-lm"])


def _epochs(target: int, train_rows: int, batch: int) -> Advice:
    steps_per_epoch = math.ceil(train_rows / batch)
    epochs = min(MAX_EPOCHS, max(1, math.ceil(target / steps_per_epoch)))
    steps = epochs * steps_per_epoch
    if epochs == 1:
        return Advice(1, f"one pass is already {steps:,} steps")
    capped = f" (capped at {MAX_EPOCHS})" if epochs == MAX_EPOCHS and steps < target else ""
    return Advice(epochs, f"{steps:,} steps in all{capped}: a visible change needs about {target} steps at "
                          f"{steps_per_epoch} an epoch")
