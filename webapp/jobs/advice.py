"""The settings advisor for the job form and the API: trainer.advice's proposal for a catalog model, one of the
team's datasets (its validation report's rows, token lengths and labels) and a worker class (the memory its
smallest live worker advertises, webapp.jobs.routing).

`advice_for` gives {setting: Advice} (trainer.advice.values: the bare values). The form starts from these values
and shows the reasons; its script asks `jobs:advice` again whenever the model, dataset or worker class
changes.
"""
from __future__ import annotations

from trainer.advice import Advice, advise
from webapp.jobs import routing
from webapp.jobs.forms import PREFERENCE_FORMAT
from webapp.ops import checks


def advice_for(model, dataset, *, task: str | None = None, worker_class: str = "", eval_fraction: float = 0.1,
               separate_eval: bool = False, method: str | None = None) -> dict[str, Advice]:
    """The advised settings for training `model` on `dataset` with `method` (by default dpo for a preference
    dataset, as the form presets it, else sft). The workers are asked for their memory only when a worker class
    is named (asking takes up to a second)."""
    report = dataset.report or {}
    task = task or dataset.task or model.default_task
    labels = report.get("labels") if task == "classification" else None
    capacity = routing.class_capacity(checks.workers(), worker_class) if worker_class else None
    return advise(model.info, task=task, rows=report.get("valid_rows") or dataset.rows or 0,
                  token_stats=report.get("token_stats"), eval_fraction=0.0 if separate_eval else eval_fraction,
                  num_labels=len(labels) if labels else None, capacity=capacity,
                  method=method or ("dpo" if dataset.format == PREFERENCE_FORMAT else "sft"))


def as_json(advice: dict[str, Advice]) -> dict:
    return {name: {"value": item.value, "reason": item.reason} for name, item in advice.items()}
