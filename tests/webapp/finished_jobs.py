"""Artifacts of a finished job, built fast for the results, downloads and playground tests.

`build_artifacts` wraps a tiny saved model with LoRA, gives the adapter random weights (so the fine-tuned model
answers differently from its base), and writes what a training run leaves: adapter/ in PEFT layout, optionally
merged/, and metrics.json in the trainer's shape. `upload` puts them in storage under jobs/<id>/.
"""
from __future__ import annotations

import json
from pathlib import Path


import tiny_models

KINDS = {"llama": "causal-lm", "bert": "classification"}


def build_artifacts(kind: str, folder: Path, *, merge: bool = False) -> Path:
    """A base model folder `folder/base` and a run's output `folder/out`; returns `folder`."""
    from trainer.adapter_io import save_adapter
    from trainer.config import LoraSettings
    from trainer.inject import apply_lora, merge_and_unload
    from trainer.models import load_model
    from trainer.params import parameter_report

    task = KINDS[kind]
    base = tiny_models.save_tiny(kind, folder / "base")
    model, tokenizer = load_model(str(base), task)
    settings = LoraSettings(rank=4, alpha=8, dropout=0.0, targets="attention")
    handle = apply_lora(model, settings, task)
    tiny_models.randomize_lora(model)
    out = folder / "out"
    labels = dict(enumerate(tiny_models.LABELS)) if task == "classification" else None
    save_adapter(model, out / "adapter", base_model_name_or_path=str(base), task=task, settings=settings,
                 target_modules=handle.target_modules, modules_to_save=handle.modules_to_save,
                 label_mapping=labels)
    report = parameter_report(model, handle.modules_to_save)
    (out / "metrics.json").write_text(json.dumps(_metrics(task, report, settings, str(base), labels), indent=1))
    if merge:
        merge_and_unload(model)
        model.save_pretrained(out / "merged")
        tokenizer.save_pretrained(out / "merged")
    return folder


def _metrics(task: str, report: dict, settings, base: str, labels) -> dict:
    if task == "classification":
        names = list(labels.values())
        before = {"eval_loss": 1.2, "accuracy": 0.25, "macro_f1": 0.2, "eval_examples": 12,
                  "confusion_matrix": {"labels": names, "matrix": [[1, 1, 2], [2, 0, 2], [1, 1, 2]]}}
        after = {"eval_loss": 0.4, "accuracy": 0.75, "macro_f1": 0.74, "eval_examples": 12,
                 "confusion_matrix": {"labels": names, "matrix": [[3, 0, 1], [0, 4, 0], [1, 1, 2]]}}
        changes = _prediction_changes(names)
    else:
        before = {"eval_loss": 5.5, "perplexity": 244.7, "eval_tokens": 70}
        after = {"eval_loss": 3.1, "perplexity": 22.2, "eval_tokens": 70}
        changes = None
    return {
        "status": "completed", "task": task, "device": "cpu",
        "trainable_params": report["trainable"], "total_params": report["total"],
        "trainable_percent": report["percent"], "adapter_bytes": report["adapter_bytes"],
        "base_model_bytes": report["base_model_bytes"], "size_ratio": report["ratio"],
        "base_eval": before, "final_eval": after, "eval_history": [{"step": 4, **after}],
        "train_tokens": 1620, "train_runtime_s": 3.5, "tokens_per_s": 462.0, "steps": 8, "total_steps": 8,
        "padding_fraction": 0.02, "history": [{"step": s, "loss": 5.5 - 0.3 * s, "lr": 2e-4} for s in range(1, 9)],
        "label_mapping": {str(i): name for i, name in labels.items()} if labels else None,
        "prediction_changes": changes,
        "data": {"format": "classification" if labels else "alpaca", "rows": 40},
        "config": {"model": base, "task": task, "lora": vars(settings), "epochs": 3.0, "max_steps": 8,
                   "batch_size": 8, "lr": 2e-4, "seed": 0, "merge": False},
    }


def _prediction_changes(names: list[str]) -> dict:
    """Six rows fixed, one changed from one wrong label to another (the diagonals above differ by six); one text is
    a long unbroken link, as tickets have."""
    texts = ["refund my order", "the app crashes", "hello there", "charged twice",
             "see https://example.com/" + "a" * 300, "cannot log in", "where is my parcel"]
    rows = [{"example": i, "text": text, "label": names[i % 3], "before": names[(i + 1) % 3], "after": names[i % 3]}
            for i, text in enumerate(texts[:6])]
    rows.append({"example": 6, "text": texts[6], "label": names[0], "before": names[1], "after": names[2]})
    return {"compared": 12, "changed": 7, "fixed": 6, "broken": 0, "rows": rows}


def upload(folder: Path, job_id: int) -> dict:
    """Copy `folder/out` into storage under jobs/<job_id>/ (replacing what an earlier test run left there);
    returns the job's `artifacts` field."""
    from webapp.jobs.storage import delete_tree, put_tree

    out = folder / "out"
    delete_tree(f"jobs/{job_id}/")
    put_tree(out, f"jobs/{job_id}/")
    merged = (out / "merged").is_dir()
    return {"adapter": f"jobs/{job_id}/adapter/", "merged": f"jobs/{job_id}/merged/" if merged else None,
            "metrics": f"jobs/{job_id}/metrics.json"}


def metrics_of(folder: Path) -> dict:
    return json.loads((folder / "out" / "metrics.json").read_text())


def make_job(team, run: Path, *, name: str = "Tickets router", state: str = "succeeded", merged: bool = False):
    """A job row of `team` for the run in `run`, its artifacts uploaded to storage (only when it succeeded)."""
    from webapp.catalog.models import BaseModel
    from webapp.datasets.models import Dataset
    from webapp.jobs.models import Job

    metrics = metrics_of(run)
    base, _ = BaseModel.objects.get_or_create(
        source=str(run / "base"), defaults={"name": f"tiny {metrics['task']}", "status": "ready",
                                            "task_types": [metrics["task"]]})
    dataset = Dataset.objects.create(team=team, name=f"{name} data", original_filename="data.jsonl",
                                     file="datasets/none.jsonl", status="ready", format=metrics["data"]["format"],
                                     task=metrics["task"], rows=metrics["data"]["rows"])
    settings = {key: value for key, value in metrics["config"].items() if key not in ("model", "task")}
    job = Job.objects.create(team=team, name=name, base_model=base, dataset=dataset, task=metrics["task"],
                             settings=settings, state=state)
    if state == "succeeded":
        job.metrics = metrics
        job.artifacts = upload(run, job.pk)
        if not merged:
            job.artifacts["merged"] = None
        job.save(update_fields=["metrics", "artifacts"])
    return job
