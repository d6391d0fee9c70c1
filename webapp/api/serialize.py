"""Turning catalog entries, datasets and jobs into the API's JSON shapes (the ones `schema.py` describes)."""


def iso(value):
    return value.isoformat() if value else None


def base_model_json(model) -> dict:
    info = model.info or {}
    return {
        "id": model.pk, "name": model.name, "source": model.source, "is_demo": model.is_demo,
        "status": model.status, "error": model.error or None, "architecture": model.architecture,
        "model_type": model.model_type, "task_types": list(model.task_types or []),
        "total_params": info.get("total_params"), "size_bytes": info.get("size_bytes"),
        "has_chat_template": info.get("has_chat_template"),
    }


def dataset_json(dataset) -> dict:
    report = dataset.report or {}
    stats_keys = ("valid_rows", "problem_count", "token_stats", "histogram", "max_length", "truncated_rows",
                  "labels", "warnings", "summary", "eval", "columns", "kind", "compressed")
    return {
        "id": dataset.pk, "name": dataset.name, "status": dataset.status,
        "format": dataset.format or None, "task": dataset.task or None, "rows": dataset.rows,
        "errors": [{"row": p.get("row"), "field": p.get("field"), "message": p.get("message", ""),
                    "file": p.get("file")} for p in report.get("problems") or []],
        "stats": {key: report[key] for key in stats_keys if key in report},
        "original_filename": dataset.original_filename, "size_bytes": dataset.size_bytes,
        "column_mapping": dataset.column_mapping or {}, "error": dataset.error or None,
        "created_at": iso(dataset.created_at),
    }


def job_json(job) -> dict:
    from webapp.jobs import queue
    from webapp.jobs.stream import progress_snapshot

    progress = progress_snapshot(job)["progress"] if job.state == "running" else job.recorded_progress()
    metrics = job.metrics or {}
    return {
        "id": job.pk, "name": job.name, "status": job.state, "base_model": job.base_model_id,
        "dataset": job.dataset_id, "eval_dataset": job.eval_dataset_id, "start_from": job.start_from_id,
        "task": job.task,
        "worker_class": job.worker_class or None, "worker_name": job.worker_name or None,
        "settings": job.settings,
        "progress": {key: progress.get(key) for key in ("step", "total_steps", "loss", "tokens_per_s", "eta_s")},
        "params": params_of(job, metrics),
        "base_eval": metrics.get("base_eval"), "final_eval": metrics.get("final_eval"),
        "error": job.error or None, "has_merged": bool((job.artifacts or {}).get("merged")),
        "created_at": iso(job.created_at), "queued_at": iso(job.queued_at), "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "worker_silent_since": iso((queue.silent_worker(job) or {}).get("since")),
    }


def params_of(job, metrics: dict) -> dict:
    """Counted by the trainer once it ran; until then, the same estimate the create form showed."""
    if metrics.get("trainable_params"):
        return {"trainable": metrics["trainable_params"], "total": metrics.get("total_params"),
                "adapter_bytes": metrics.get("adapter_bytes")}
    from trainer.errors import TrainerError
    from trainer.estimate import estimate

    lora = (job.settings or {}).get("lora", {})
    try:
        numbers = estimate(job.base_model.info, targets=lora.get("targets", "attention"), rank=lora.get("rank", 8),
                           task=job.task, batch_size=job.settings.get("batch_size", 8),
                           max_length=job.settings.get("max_length", 512))
    except (TrainerError, KeyError, TypeError):
        return {"trainable": None, "total": None, "adapter_bytes": None}
    return {"trainable": numbers["trainable"], "total": numbers["total"], "adapter_bytes": numbers["adapter_bytes"]}


def event_json(event) -> dict:
    if event.kind == event.LOG:
        return {"id": event.pk, "at": iso(event.at), "kind": "log", "from_state": None, "to_state": None,
                "message": event.reason}
    arrow = f"{event.from_state} -> {event.to_state}" if event.from_state else event.to_state
    return {"id": event.pk, "at": iso(event.at), "kind": "state", "from_state": event.from_state or None,
            "to_state": event.to_state, "message": f"{arrow}{': ' + event.reason if event.reason else ''}"}
