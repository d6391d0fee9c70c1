"""metrics.json: what a finished (or stopped) run reports, from its state and the run's own figures.

Its keys are a named interface (the results page, the API and scripts read them). `run` is trainer.train's run,
whose attributes (parameter report, memory figures, LoRA targets, data statistics, config) give what the loop's
state does not hold.
"""
from __future__ import annotations

from trainer import prediction_changes
from trainer.quantized import DTYPE_NAMES


def run_metrics(run, state: dict, final_eval: dict | None, stopped: bool) -> dict:
    """metrics.json's content for the run `run` (trainer.train) that ended with `state`."""
    params = run.params
    return {
        "status": "stopped" if stopped else "completed",
        # why the loop ended: all steps done, early stopping, or a stop request
        "stop_reason": "stopped" if stopped else (state["stop_reason"] or "completed"),
        "keep": "best" if run.keep_best else "last",
        "best_step": (state["best"] or {}).get("step"),
        # the step whose adapter OUT/adapter holds
        "kept_step": (state["best"] or {}).get("step") if run.keep_best and not stopped else state["step"],
        "task": run.config.task,
        "device": run.device,
        "quantize": run.config.quantize,
        "dtype": DTYPE_NAMES[run.dtype],
        "merged_dtype": run.merged_dtype,
        "trainable_params": params["trainable"],
        "total_params": params["total"],
        "trainable_percent": params["percent"],
        "adapter_bytes": params["adapter_bytes"],
        "base_model_bytes": params["base_model_bytes"],
        "size_ratio": params["ratio"],
        **run.memory_figures,
        "target_modules": run.lora.target_modules,
        "modules_to_save": run.lora.modules_to_save,
        "base_eval": state["base_eval"],
        "final_eval": final_eval,
        "eval_history": state["eval_history"],
        "train_examples": len(run.train_features),
        "eval_examples": len(run.eval_features),
        "train_tokens": state["train_tokens"],
        "train_runtime_s": state["runtime_s"],
        "train_wall_s": state["wall_s"],
        "tokens_per_s": state["train_tokens"] / max(state["runtime_s"], 1e-9),
        "steps": state["step"],
        "total_steps": run.total_steps,
        "steps_per_epoch": run.steps_per_epoch,
        "processes": run.processes,
        "global_batch_size": run.config.batch_size * run.processes,
        "padding_fraction": 1 - state["train_tokens"] / max(state["padded_tokens"], 1),
        "resumed_from_step": state["resumed_from_step"],
        "history": state["history"],
        "samples": state["samples"],
        "prediction_changes": _prediction_changes(run, state, final_eval),
        "label_mapping": dict(enumerate(run.label_mapping)) if run.label_mapping else None,
        "data": run.data_stats,
        "config": run.config.to_dict(),
    }


def _prediction_changes(run, state: dict, final_eval: dict | None) -> dict | None:
    """Classification: the held-out rows whose prediction the kept adapter changed (trainer.prediction_changes)."""
    if final_eval is None or not state.get("base_predictions") or not run.eval_predictions:
        return None
    return prediction_changes.compare(state["base_predictions"], run.eval_predictions, run.eval_features,
                                      run.label_mapping, run.tokenizer)
