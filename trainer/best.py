"""Best-checkpoint selection and early stopping, judged on the periodic and final held-out evals.

The score is the eval loss, lower is better (for DPO the DPO loss), or the accuracy for classification, higher is
better (ties broken by the lower eval loss). `Best` is a small JSON-able record kept in the run's state (so it survives a resume):
{"step", "metric", "value", "evals_without_improvement"}. With `keep="best"` the adapter weights of the best eval so
far are written to OUT/best/adapter_weights.safetensors whenever it improves, and put back before the adapter is
saved; the weights of the last step are kept otherwise.
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

BEST_DIR = "best"
WEIGHTS_FILE = "adapter_weights.safetensors"


def scored_metric(task: str) -> tuple[str, bool]:
    """(key of the eval dict, higher is better)."""
    return ("accuracy", True) if task == "classification" else ("eval_loss", False)


def keeps_best(config, has_eval: bool) -> bool:
    """`keep` "best", or "auto" with periodic evals on held-out data (the default then)."""
    return has_eval and bool(config.eval_every) and (config.keep == "best" or config.keep == "auto")


def record(best: dict | None, step: int, metrics: dict, task: str) -> tuple[dict, bool]:
    """(the updated record, whether this eval is the best so far). An eval without the score changes nothing."""
    key, higher = scored_metric(task)
    value = metrics.get(key)
    if value is None:
        return best, False
    # Accuracy ties often (few held-out rows): the lower eval loss breaks them.
    tie_break = -metrics.get("eval_loss", 0.0) if higher else 0.0
    if best is None or ((value, tie_break) > (best["value"], best.get("tie_break", 0.0)) if higher
                        else value < best["value"]):
        return {"step": step, "metric": key, "value": value, "tie_break": tie_break,
                "evals_without_improvement": 0}, True
    return {**best, "evals_without_improvement": best["evals_without_improvement"] + 1}, False


def save_weights(out: Path, model) -> None:
    folder = Path(out) / BEST_DIR
    folder.mkdir(parents=True, exist_ok=True)
    weights = {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}
    save_file(weights, str(folder / f"{WEIGHTS_FILE}.partial"))
    (folder / f"{WEIGHTS_FILE}.partial").replace(folder / WEIGHTS_FILE)


def restore_weights(out: Path, model) -> None:
    weights = load_file(str(Path(out) / BEST_DIR / WEIGHTS_FILE))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad:
                param.copy_(weights[name])
