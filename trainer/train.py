"""One fine-tuning run, start to finish: `train(config, reporter) -> metrics`.

data -> base model + LoRA -> eval of the untouched model -> AdamW loop -> final eval -> OUT/adapter (PEFT
layout), OUT/merged (with config.merge), OUT/metrics.json. Checkpoints go to OUT/checkpoints every
`checkpoint_every` optimizer steps, at the end, and when the reporter asks to stop; `config.resume` continues
from the newest one exactly (same weights, optimizer, schedule, RNG and batch order as an unbroken run).

A step is one optimizer update over `grad_accum` micro-batches. Its loss is the mean over every target in
those micro-batches (tokens with a label for causal LM, examples for classification), so accumulating gives
the same gradient as one big batch. The loop syncs with the device once a step (the loss for the reporter).
Throughput, ETA and `train_runtime_s` count training time only: periodic evals and checkpoints are timed apart
(`train_wall_s` is the loop's wall time with them).
"""
from __future__ import annotations

import json
import math
import random
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from trainer import best, checkpoint, prediction_changes, sample_answers
from trainer.adapter_io import load_adapter, read_adapter_config, save_adapter
from trainer.config import LoraSettings, TrainConfig
from trainer.data.batching import batch_order, collate
from trainer.data.dataset import prepare
from trainer.data.render import ensure_chat_template
from trainer.errors import ConfigError, OutOfMemoryError
from trainer.estimate import out_of_memory_advice
from trainer.evaluate import EVAL_BATCH_SIZE_FACTOR, batch_loss_sum, evaluate, target_count
from trainer.inject import LoraHandle, apply_lora, lora_modules
from trainer.memory import MemoryMeter
from trainer.models import load_model, load_tokenizer, pick_device, resolve_model_path
from trainer.params import parameter_report
from trainer.quantized import DTYPE_NAMES, keep_trainable_in_float32, resolve_dtype
from trainer.reporter import NullReporter, Reporter
from trainer.schedule import make_scheduler, warmup_steps_for

METRICS_FILE = "metrics.json"
LOGGED_PROBLEMS = 5  # of the data's row problems, how many the run's log names


def train(config: TrainConfig, reporter: Reporter | None = None) -> dict:
    """Run the job described by `config`; returns the metrics also written to OUT/metrics.json."""
    reporter = reporter or NullReporter()
    config.check()
    if config.method == "dpo":
        from trainer.dpo import DpoMethod

        run_class = type("DpoRun", (DpoMethod, _Run), {})
    else:
        run_class = _Run
    try:
        return run_class(config, reporter).run()
    except (torch.OutOfMemoryError, MemoryError):
        raise OutOfMemoryError(_oom_message(config)) from None
    except RuntimeError as error:
        if "out of memory" in str(error) or "can't allocate memory" in str(error):
            raise OutOfMemoryError(_oom_message(config)) from None
        raise


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # CPU and every CUDA device
    try:
        import numpy as np
    except ImportError:
        return
    np.random.seed(seed)


def precision(device: str, dtype: torch.dtype = torch.float32):
    """(autocast context factory, GradScaler or None) for a base loaded in `dtype` on `device`.

    The base's weights are in the compute dtype already (trainer.quantized.resolve_dtype), so nothing runs
    under autocast; an fp16 base on CUDA gets a GradScaler (fp16 gradients underflow without loss scaling)."""
    if device == "cuda" and dtype == torch.float16:
        return nullcontext, torch.amp.GradScaler("cuda")
    return nullcontext, None


class _Run:
    def __init__(self, config: TrainConfig, reporter: Reporter):
        self.config, self.reporter = config, reporter
        self.out = Path(config.out)
        self.checkpoints = self.out / "checkpoints"
        self.step_metrics: dict = {}  # figures of the last step besides its loss (see trainer.dpo)
        self.merged_dtype = None  # the merged model's dtype, once written
        self.eval_predictions: list[int] = []  # classification: the last eval's label id for each eval feature

    def run(self) -> dict:
        config, reporter = self.config, self.reporter
        self.out.mkdir(parents=True, exist_ok=True)
        seed_everything(config.seed)
        self.device = pick_device(config.device)
        self.memory = MemoryMeter(self.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        self.autocast, self.scaler = precision(self.device, self.dtype)
        reporter.on_log(f"preparing data from {config.data}")
        tokenizer = load_tokenizer(resolve_model_path(config.model))
        # prepare raises DataError when no usable training example is left.
        self.train_features, self.eval_features, self.label_mapping, self.data_stats = self._prepare_data(tokenizer)
        reporter.on_log(data_summary(self.data_stats, config.max_length))
        self.memory.mark_before_model()
        self._load_model()
        self._plan()
        self.keep_best = best.keeps_best(config, bool(self.eval_features))
        state = self._start()
        self.sample_prompts = (sample_answers.prepare(self.tokenizer, config.sample_prompts, self.eval_features)
                               if config.task == "causal-lm" and config.sample_answers else ([], []))
        if state["base_eval"] is None and self.eval_features:
            state["base_eval"] = self._evaluate()
            state["base_predictions"] = self.eval_predictions or None
            reporter.on_eval({"stage": "base", **state["base_eval"]})
        if state["samples"] is None:
            self._write_samples(state, "base")
        stopped = self._loop(state)
        return self._finish(state, stopped)

    # --- setup -------------------------------------------------------------------------------------------

    def _prepare_data(self, tokenizer):
        return prepare(self.config, tokenizer)

    def _load_model(self) -> None:
        config = self.config
        self.reporter.on_log(f"loading {config.model} on {self.device}")
        id2label = dict(enumerate(self.label_mapping)) if self.label_mapping else None
        self.reporter.on_log(f"base weights in {DTYPE_NAMES[self.dtype]}"
                             + (f", block linears quantized to {config.quantize}" if config.quantize != "none" else ""))
        self.model, self.tokenizer = load_model(config.model, config.task, id2label=id2label, device=self.device,
                                                dtype=self.dtype, quantize=config.quantize)
        if self.data_stats["format"] == "chat":  # saved with the adapter: the format it was trained on
            ensure_chat_template(self.tokenizer)
        if config.init_adapter:
            self.lora = self._continue_adapter()
        else:
            self.lora = apply_lora(self.model, config.lora, config.task)
        for name in self.lora.modules_to_save:
            keep_trainable_in_float32(self.model.get_submodule(name))
        if config.gradient_checkpointing:
            self.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        self.model.train()
        self.params = parameter_report(self.model)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=config.lr, weight_decay=config.weight_decay)

    def _continue_adapter(self) -> LoraHandle:
        """Put the saved adapter `config.init_adapter` on the base, trainable, and take its LoRA shape as the
        run's (so the adapter saved at the end has the same layout)."""
        config = self.config
        saved = read_adapter_config(config.init_adapter)
        if saved.get("task_type") != {"causal-lm": "CAUSAL_LM", "classification": "SEQ_CLS"}[config.task]:
            raise ConfigError(f"{config.init_adapter} was trained for another task than {config.task}", "init_adapter")
        load_adapter(self.model, config.init_adapter)
        targets = sorted(name for name, _ in lora_modules(self.model))
        heads = list(saved.get("modules_to_save") or [])
        for name, param in self.model.named_parameters():
            param.requires_grad_("lora_" in name or any(name.startswith(f"{head}.") for head in heads))
        config.lora = LoraSettings(rank=int(saved["r"]), alpha=float(saved["lora_alpha"]), dropout=config.lora.dropout,
                                   targets=",".join(targets), rslora=bool(saved.get("use_rslora")))
        self.reporter.on_log(f"continuing from the adapter in {config.init_adapter}")
        return LoraHandle(target_modules=targets, modules_to_save=heads)

    def _plan(self) -> None:
        config = self.config
        self.batches_per_epoch = len(self._epoch_batches(0))
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / config.grad_accum)
        self.total_steps = config.max_steps or max(1, math.ceil(config.epochs * self.steps_per_epoch))
        self.scheduler = make_scheduler(self.optimizer, config.scheduler, self.total_steps,
                                        warmup_steps_for(self.total_steps, config.warmup))
        self.reporter.on_log(f"{len(self.train_features)} training examples, {self.steps_per_epoch} steps an "
                             f"epoch, {self.total_steps} steps; {len(self.eval_features)} held out")

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        config = self.config
        return batch_order(self.train_features, config.batch_size, seed=config.seed, epoch=epoch)

    def _start(self) -> dict:
        """Fresh run state, or the newest checkpoint's when resuming."""
        state = {"step": 0, "epoch": 0, "batch": 0, "history": [], "eval_history": [], "base_eval": None,
                 "train_tokens": 0, "padded_tokens": 0, "runtime_s": 0.0, "wall_s": 0.0, "resumed_from_step": None,
                 "best": None, "stop_reason": None, "samples": None, "base_predictions": None}
        if not self.config.resume:
            return state
        found = checkpoint.latest_checkpoint(self.checkpoints)
        if found is None:
            self.reporter.on_log("no checkpoint to resume from: starting from the beginning")
            return state
        restored = checkpoint.load_checkpoint(found, self.model, self.optimizer, self.scheduler, self.scaler)
        extra = restored["extra"]
        if extra.get("total_steps") != self.total_steps:
            raise ConfigError(f"{found} was written for a run of {extra.get('total_steps')} steps, this one has "
                              f"{self.total_steps}: resume with the same data and settings", "resume")
        state.update(extra["state"], step=restored["step"], history=restored["history"],
                     epoch=restored["position"]["epoch"], batch=restored["position"]["batch"],
                     resumed_from_step=restored["step"])
        self.reporter.on_log(f"resumed from {found.name}")
        return state

    # --- the loop ----------------------------------------------------------------------------------------

    def _windows(self, epoch: int, batch: int):
        """Yield (epoch, next batch index, [collated micro-batches]) for each optimizer step, across epochs."""
        while True:
            order = self._epoch_batches(epoch)
            for start in range(batch, len(order), self.config.grad_accum):
                chosen = order[start:start + self.config.grad_accum]
                features = [[self.train_features[i] for i in indices] for indices in chosen]
                yield epoch, start + len(chosen), [self._collate(f) for f in features]
            epoch, batch = epoch + 1, 0

    def _collate(self, features: list[dict]) -> dict:
        return collate(features, self.tokenizer.pad_token_id)

    def _loop(self, state: dict) -> bool:
        """Train until total_steps or a stop request; returns True when stopped early."""
        config, reporter = self.config, self.reporter
        started, tokens_at_start = time.perf_counter(), state["train_tokens"]
        runtime_before, wall_before = state["runtime_s"], state.get("wall_s", state["runtime_s"])
        paused = 0.0  # seconds spent in periodic evals and checkpoints, left out of the throughput
        windows = self._windows(state["epoch"], state["batch"])
        while state["step"] < self.total_steps:
            epoch, next_batch, window = next(windows)
            lr = self.optimizer.param_groups[0]["lr"]
            loss = self._step(window)
            state["step"] += 1
            state["epoch"], state["batch"] = epoch, next_batch
            for batch in window:
                state["train_tokens"] += int(batch["attention_mask"].sum())
                state["padded_tokens"] += batch["attention_mask"].numel()
            wall = time.perf_counter() - started
            elapsed = wall - paused
            state["runtime_s"], state["wall_s"] = runtime_before + elapsed, wall_before + wall
            state["history"].append({"step": state["step"], "loss": loss, "lr": lr, **self.step_metrics})
            tokens_per_s = (state["train_tokens"] - tokens_at_start) / max(elapsed, 1e-9)
            done_here = state["step"] - (state["resumed_from_step"] or 0)
            eta_s = elapsed / done_here * (self.total_steps - state["step"])
            # Methods with more per-step figures than the loss (DPO) pass them as `metrics`.
            reporter.on_step(state["step"], self.total_steps, loss, lr, tokens_per_s, eta_s,
                             **({"metrics": self.step_metrics} if self.step_metrics else {}))
            pause_started = time.perf_counter()
            if (config.eval_every and self.eval_features and state["step"] % config.eval_every == 0
                    and state["step"] < self.total_steps):
                metrics = self._evaluate()
                state["eval_history"].append({"step": state["step"], **metrics})
                reporter.on_eval({"stage": "during", "step": state["step"], **metrics})
                self._write_samples(state, "during")
                if self._judge(state, metrics):
                    state["stop_reason"] = "early_stopping"
                    reporter.on_log(f"early stopping at step {state['step']}: {config.early_stopping_patience} "
                                    f"evals without a better {state['best']['metric']} than step "
                                    f"{state['best']['step']}'s")
                    return False
            if reporter.should_stop():
                self._checkpoint(state)
                reporter.on_log(f"stopped at step {state['step']}; checkpoint saved")
                return True
            if config.checkpoint_every and state["step"] % config.checkpoint_every == 0:
                self._checkpoint(state)
            paused += time.perf_counter() - pause_started
            state["wall_s"] = wall_before + time.perf_counter() - started
        return False

    def _step(self, window: list[dict]) -> float:
        """One optimizer update over the micro-batches in `window`; returns the mean loss per target."""
        task = self.config.task
        targets = sum(target_count(batch, task) for batch in window)
        total = torch.zeros((), device=self.device)
        for batch in window:
            with self.autocast():
                loss = batch_loss_sum(self.model, batch, task, self.device) / max(targets, 1)
            (self.scaler.scale(loss) if self.scaler else loss).backward()
            total += loss.detach()
        self._optimizer_step()
        return total.item()

    def _optimizer_step(self) -> None:
        """Clip, step and schedule once the step's gradients are accumulated."""
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if self.config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.config.max_grad_norm)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _evaluate(self) -> dict | None:
        if not self.eval_features:
            return None
        size = self.config.batch_size * EVAL_BATCH_SIZE_FACTOR
        order = sorted(range(len(self.eval_features)), key=lambda i: len(self.eval_features[i]["input_ids"]))
        batches = (collate([self.eval_features[i] for i in order[start:start + size]], self.tokenizer.pad_token_id)
                   for start in range(0, len(order), size))
        guessed: list[int] = []
        metrics = evaluate(self.model, batches, self.config.task, label_names=self.label_mapping or None,
                           device=self.device, autocast=self.autocast, predictions=guessed)
        self.eval_predictions = [0] * len(guessed)
        for index, label in zip(order, guessed):  # back from length order to eval-feature order
            self.eval_predictions[index] = label
        return metrics

    def _write_samples(self, state: dict, stage: str) -> None:
        """Answer the sample prompts with the model as it is now (see trainer.sample_answers)."""
        texts, ids = self.sample_prompts
        if not ids:
            return
        if state["samples"] is None:
            state["samples"] = {"prompts": texts, "checkpoints": []}
        state["samples"]["checkpoints"].append(
            {"step": state["step"], "stage": stage,
             "answers": sample_answers.answers(self.model, self.tokenizer, ids)})

    def _judge(self, state: dict, metrics: dict) -> bool:
        """Record a periodic eval for best-checkpoint selection; True when early stopping's patience is spent."""
        state["best"], improved = best.record(state["best"], state["step"], metrics, self.config.task)
        if improved and self.keep_best:
            best.save_weights(self.out, self.model)
        patience = self.config.early_stopping_patience
        return bool(patience) and state["best"] is not None and state["best"]["evals_without_improvement"] >= patience

    def _keep_best(self, state: dict, final_eval: dict | None) -> dict | None:
        """Judge the final eval too; with keep_best and an earlier best, put its weights back and evaluate them."""
        if final_eval is None:
            return None
        state["best"], improved = best.record(state["best"], state["step"], final_eval, self.config.task)
        if not self.keep_best or improved or state["best"]["step"] == state["step"]:
            return final_eval
        kept = state["best"]
        best.restore_weights(self.out, self.model)
        self.reporter.on_log(f"keeping the adapter of step {kept['step']}: its {kept['metric']} "
                             f"{kept['value']:.4f} is the best of the run")
        return self._evaluate()

    def _checkpoint(self, state: dict) -> None:
        kept = {key: state[key] for key in ("eval_history", "base_eval", "train_tokens", "padded_tokens",
                                            "runtime_s", "wall_s", "best", "stop_reason", "samples",
                                            "base_predictions")}
        checkpoint.save_checkpoint(self.checkpoints, state["step"], self.model, self.optimizer, self.scheduler,
                                   position={"epoch": state["epoch"], "batch": state["batch"]},
                                   history=state["history"],
                                   extra={"state": kept, "total_steps": self.total_steps}, scaler=self.scaler)

    # --- the end -----------------------------------------------------------------------------------------

    def _finish(self, state: dict, stopped: bool) -> dict:
        config, out = self.config, self.out
        final_eval = None
        if not stopped:
            if not (config.checkpoint_every and state["step"] % config.checkpoint_every == 0):
                self._checkpoint(state)  # the loop has not just written this step's
            final_eval = self._keep_best(state, self._evaluate())
            if final_eval is not None:
                self.reporter.on_eval({"stage": "final", **final_eval})
            self._write_samples(state, "final")
            id2label = dict(enumerate(self.label_mapping)) if self.label_mapping else None
            save_adapter(self.model, out / "adapter", base_model_name_or_path=config.model, task=config.task,
                         settings=config.lora, target_modules=self.lora.target_modules,
                         modules_to_save=self.lora.modules_to_save, label_mapping=id2label)
            # With its chat template, if it was trained on chat: merge and inference read it from here.
            self.tokenizer.save_pretrained(out / "adapter")
        # Measured before the merge, which loads a second copy of the base: the figures describe training.
        self.memory_figures = self.memory.figures()
        if not stopped and config.merge:
            self._merge()
        metrics = self._metrics(state, final_eval, stopped)
        (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2, default=str) + "\n")
        return metrics

    def _merge(self) -> None:
        from trainer.merge import merge_to_folder

        from trainer.inspect_model import checkpoint_dtype

        quantize = self.config.quantize
        self.merged_dtype = checkpoint_dtype(resolve_model_path(self.config.model), None)
        self.reporter.on_log("writing the merged model" + (f": the {quantize} base dequantized to "
                                                            f"{self.merged_dtype}, its own dtype, then merged"
                                                            if quantize != "none" else ""))
        merge_to_folder(self.config.model, self.out / "adapter", self.out / "merged", quantize=quantize)

    def _metrics(self, state: dict, final_eval: dict | None, stopped: bool) -> dict:
        params = self.params
        return {
            "status": "stopped" if stopped else "completed",
            # why the loop ended: all steps done, early stopping, or a stop request
            "stop_reason": "stopped" if stopped else (state["stop_reason"] or "completed"),
            "keep": "best" if self.keep_best else "last",
            "best_step": (state["best"] or {}).get("step"),
            # the step whose adapter OUT/adapter holds
            "kept_step": (state["best"] or {}).get("step") if self.keep_best and not stopped else state["step"],
            "task": self.config.task,
            "device": self.device,
            "quantize": self.config.quantize,
            "dtype": DTYPE_NAMES[self.dtype],
            "merged_dtype": self.merged_dtype,
            "trainable_params": params["trainable"],
            "total_params": params["total"],
            "trainable_percent": params["percent"],
            "adapter_bytes": params["adapter_bytes"],
            "base_model_bytes": params["base_model_bytes"],
            "size_ratio": params["ratio"],
            **self.memory_figures,
            "target_modules": self.lora.target_modules,
            "modules_to_save": self.lora.modules_to_save,
            "base_eval": state["base_eval"],
            "final_eval": final_eval,
            "eval_history": state["eval_history"],
            "train_examples": len(self.train_features),
            "eval_examples": len(self.eval_features),
            "train_tokens": state["train_tokens"],
            "train_runtime_s": state["runtime_s"],
            "train_wall_s": state["wall_s"],
            "tokens_per_s": state["train_tokens"] / max(state["runtime_s"], 1e-9),
            "steps": state["step"],
            "total_steps": self.total_steps,
            "steps_per_epoch": self.steps_per_epoch,
            "padding_fraction": 1 - state["train_tokens"] / max(state["padded_tokens"], 1),
            "resumed_from_step": state["resumed_from_step"],
            "history": state["history"],
            "samples": state["samples"],
            "prediction_changes": self._prediction_changes(state, final_eval),
            "label_mapping": dict(enumerate(self.label_mapping)) if self.label_mapping else None,
            "data": self.data_stats,
            "config": self.config.to_dict(),
        }


    def _prediction_changes(self, state: dict, final_eval: dict | None) -> dict | None:
        """Classification: the held-out rows whose prediction the kept adapter changed (trainer.prediction_changes)."""
        if final_eval is None or not state.get("base_predictions") or not self.eval_predictions:
            return None
        return prediction_changes.compare(state["base_predictions"], self.eval_predictions, self.eval_features,
                                          self.label_mapping, self.tokenizer)


def data_summary(stats: dict, max_length: int) -> str:
    """One log line on what the data lost before training: skipped, truncated and loss-free rows, and the first
    few problems by row number."""
    line = (f"data: {stats['skipped_rows']} rows skipped for problems, {stats['truncated_rows']} truncated to "
            f"{max_length} tokens, {stats['no_loss_rows']} left out with no token to learn from")
    problems = stats.get("problems") or []
    if problems:
        shown = "; ".join(f"row {p['row']}" + (f" ({p['field']})" if p.get("field") else "") + f": {p['message']}"
                          for p in problems[:LOGGED_PROBLEMS])
        line += f". First problems: {shown}"
    return line


def _oom_message(config: TrainConfig) -> str:
    """The same fixes the job form offers for a job that will not fit (trainer.estimate.memory_fixes)."""
    settings = {"batch_size": config.batch_size, "grad_accum": config.grad_accum, "max_length": config.max_length,
                "quantize": config.quantize, "gradient_checkpointing": config.gradient_checkpointing}
    return (f"training ran out of memory (batch {config.batch_size} x {config.max_length} tokens, quantize "
            f"{config.quantize}, rank {config.lora.rank}): {out_of_memory_advice(settings)}")
