"""What the results pages show, computed from a job's row: parameter savings, eval before/after, loss series,
and its settings as flat rows (for the side-by-side comparison).

Everything reads `job.metrics` (the trainer's metrics.json, stored when the job finished) and falls back to the
job's own `history` for the loss curve. Pure functions: no storage, no templates.
"""
from __future__ import annotations

import math

# (key in an eval dict, label, higher is better)
EVAL_METRICS = {
    "causal-lm": [("eval_loss", "Eval loss", False), ("perplexity", "Perplexity", False)],
    "classification": [("eval_loss", "Eval loss", False), ("accuracy", "Accuracy", True),
                       ("macro_f1", "Macro-F1", True)],
    # DPO jobs (settings.method "dpo"): the DPO loss and the preference figures on held-out pairs.
    "dpo": [("preference_accuracy", "Preference accuracy (chosen more likely)", True),
            ("reward_margin", "Mean reward margin", True), ("reward_accuracy", "Reward accuracy", True),
            ("eval_loss", "DPO loss", False)],
}
PERCENT_METRICS = ("accuracy", "macro_f1", "preference_accuracy", "reward_accuracy")
SETTING_LABELS = {
    "lora.rank": "LoRA rank", "lora.alpha": "LoRA alpha", "lora.dropout": "LoRA dropout",
    "lora.targets": "Target modules", "lora.rslora": "rsLoRA", "epochs": "Epochs", "max_steps": "Max steps",
    "batch_size": "Batch size", "grad_accum": "Gradient accumulation", "lr": "Learning rate",
    "warmup": "Warmup (fraction)", "max_length": "Max length", "eval_fraction": "Eval fraction", "seed": "Seed",
    "merge": "Merge at end", "method": "Method", "beta": "DPO beta",
    "rpo_alpha": "SFT weight (RPO alpha)",
}


def savings(metrics: dict) -> dict | None:
    """Trainable vs total parameters and adapter vs full-model size, or None when the job recorded none."""
    needed = ("trainable_params", "total_params", "adapter_bytes", "base_model_bytes")
    if not all(metrics.get(key) for key in needed):
        return None
    trainable, total = metrics["trainable_params"], metrics["total_params"]
    adapter, full = metrics["adapter_bytes"], metrics["base_model_bytes"]
    return {"trainable": trainable, "total": total, "percent": 100.0 * trainable / total,
            "adapter_bytes": adapter, "full_bytes": full, "times_smaller": full / adapter}


def eval_kind(job) -> str:
    """The key of EVAL_METRICS for `job`: "dpo" for a DPO job, else its task."""
    return "dpo" if (job.settings or {}).get("method") == "dpo" else job.task


def eval_rows(task: str, before: dict | None, after: dict | None) -> list[dict]:
    """Rows {label, before, after, change, improved} for the metrics both evals have."""
    before, after = before or {}, after or {}
    rows = []
    for key, label, higher_is_better in EVAL_METRICS.get(task, []):
        b, a = before.get(key), after.get(key)
        if b is None and a is None:
            continue
        change = a - b if _number(a) and _number(b) else None
        improved = None if change is None or change == 0 else (change > 0) == higher_is_better
        percent = key in PERCENT_METRICS
        rows.append({"key": key, "label": label, "before": b, "after": a, "change": change, "improved": improved,
                     "percent": percent, "kind": "percent" if percent else "number"})
    return rows


def confusion(evaluation: dict | None) -> dict | None:
    """{labels, rows: [(true label, [(count, shade 0..1, is diagonal)])]} for a table with shaded cells."""
    matrix = (evaluation or {}).get("confusion_matrix")
    if not matrix:
        return None
    peak = max((c for row in matrix["matrix"] for c in row), default=0) or 1
    rows = [(label, [(count, round(count / peak, 3), i == j) for j, count in enumerate(row)])
            for i, (label, row) in enumerate(zip(matrix["labels"], matrix["matrix"]))]
    return {"labels": matrix["labels"], "rows": rows}


def train_points(job) -> list[tuple[float, float]]:
    history = (job.metrics or {}).get("history") or [p for p in job.history or [] if "loss" in p]
    return [(p["step"], p["loss"]) for p in history if _number(p.get("loss"))]


def eval_points(job) -> list[tuple[float, float]]:
    """Eval loss at step 0 (the base model), at each periodic eval, and after training."""
    metrics = job.metrics or {}
    points = []
    if _number((metrics.get("base_eval") or {}).get("eval_loss")):
        points.append((0, metrics["base_eval"]["eval_loss"]))
    for entry in metrics.get("eval_history") or []:
        if _number(entry.get("eval_loss")):
            points.append((entry["step"], entry["eval_loss"]))
    final = (metrics.get("final_eval") or {}).get("eval_loss")
    steps = metrics.get("steps")
    if _number(final) and steps is not None and (steps, final) not in points:
        points.append((steps, final))
    return sorted(set(points))


def loss_series(job, color: int = 0, prefix: str = "", *, mark_kept: bool = False) -> list[dict]:
    """Train and eval loss; with `mark_kept`, a marker at the eval of the step whose adapter was kept (best)."""
    series = [{"name": f"{prefix}train loss", "points": train_points(job), "style": "line", "color": color}]
    evals = eval_points(job)
    if evals:
        series.append({"name": f"{prefix}eval loss", "points": evals, "style": "dots", "color": color})
    metrics = job.metrics or {}
    kept = [point for point in evals if point[0] == metrics.get("kept_step")]
    if mark_kept and metrics.get("keep") == "best" and kept:
        series.append({"name": f"kept adapter (step {kept[0][0]})", "points": kept[:1], "style": "dots",
                       "color": color + 2})
    return series


STOP_REASONS = {"completed": "Trained every planned step ({steps} of {total}).",
                "early_stopping": "Stopped early at step {steps} of {total}: {patience} evals in a row without a "
                                  "better {metric} than step {best}'s.",
                "stopped": "Stopped on request at step {steps} of {total}."}


def sample_answers(metrics: dict, step: str | None) -> dict | None:
    """The sample prompts' answers: the base model's (step 0) next to the checkpoint `step` (a query value; default
    and fallback: the final one). {checkpoints: [{step, stage, selected}], step, rows: [{prompt, base, tuned}]}."""
    samples = metrics.get("samples") or {}
    checkpoints = samples.get("checkpoints") or []
    if not checkpoints:
        return None
    chosen = next((c for c in checkpoints if str(c["step"]) == step and c["stage"] != "base"), checkpoints[-1])
    base = checkpoints[0]
    rows = [{"prompt": prompt, "base": base["answers"][i], "tuned": chosen["answers"][i]}
            for i, prompt in enumerate(samples.get("prompts") or [])]
    return {"checkpoints": [{**c, "selected": c is chosen} for c in checkpoints[1:]], "step": chosen["step"],
            "stage": chosen["stage"], "rows": rows}


def stop_summary(metrics: dict) -> str | None:
    """Why training ended and which step's adapter was kept, in a sentence or two; None for older jobs."""
    reason = metrics.get("stop_reason")
    if reason not in STOP_REASONS:
        return None
    config = metrics.get("config") or {}
    metric = (config.get("task") == "classification" and "accuracy") or "eval loss"
    text = STOP_REASONS[reason].format(steps=metrics.get("steps"), total=metrics.get("total_steps"),
                                       patience=config.get("early_stopping_patience"), metric=metric,
                                       best=metrics.get("best_step"))
    if metrics.get("keep") == "best" and metrics.get("kept_step") is not None:
        text += f" The adapter kept is step {metrics['kept_step']}'s, the best {metric} of the run."
    return text


def flat_settings(job) -> dict[str, str]:
    """The job's identity and settings as {label: text}, nested LoRA settings flattened."""
    return {"Base model": str(job.base_model), "Dataset": str(job.dataset), "Task": job.task, **setting_rows(job)}


def setting_rows(job) -> dict[str, str]:
    """The job's settings as {human label: text} ("Learning rate": "0.0002", "Merge at end": "no")."""
    return {SETTING_LABELS.get(key, key.replace("_", " ").capitalize()): _text(value)
            for key, value in _flatten(job.settings or {})}


def _flatten(data: dict, prefix: str = ""):
    for key, value in data.items():
        if isinstance(value, dict) and value:
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _text(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def headline(job) -> dict | None:
    """The one eval row a list shows for a finished job, before and after: accuracy for a classifier, eval loss for
    a language model (None when the job recorded neither)."""
    metrics = job.metrics or {}
    key = "accuracy" if job.task == "classification" else "eval_loss"
    rows = eval_rows(job.task, metrics.get("base_eval"), metrics.get("final_eval"))
    return next((row for row in rows if row["key"] == key), None)
