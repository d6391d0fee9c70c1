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

Here: setup, the step loop and the end. What the run does between steps (periodic evals, the best checkpoint,
early stopping, checkpoints) and resuming: trainer.run_checkpoints; metrics.json's content: trainer.run_metrics.
"""
from __future__ import annotations

import json
import math
import random
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from trainer import best, sample_answers
from trainer.adapter_io import load_adapter, read_adapter_config, save_adapter
from trainer.config import LoraSettings, TrainConfig
from trainer.cpu_allocator import return_freed_memory_promptly
from trainer.data.batching import batch_order, collate
from trainer.data.dataset import prepare
from trainer.data.render import ensure_chat_template
from trainer.errors import ConfigError, OutOfMemoryError
from trainer.estimate import out_of_memory_advice
from trainer.evaluate import batch_loss_sum, target_count
from trainer.inject import LoraHandle, apply_lora, lora_modules
from trainer.memory import MemoryMeter
from trainer.models import load_model, load_tokenizer, pick_device, resolve_model_path
from trainer.params import parameter_report
from trainer.quantized import DTYPE_NAMES, import_quantization_library, keep_trainable_in_float32, resolve_dtype
from trainer.reporter import NullReporter, Reporter
from trainer.run_checkpoints import RunCheckpoints
from trainer.run_metrics import run_metrics
from trainer.schedule import make_scheduler, warmup_steps_for

METRICS_FILE = "metrics.json"
LOGGED_PROBLEMS = 5  # of the data's row problems, how many the run's log names


def train(config: TrainConfig, reporter: Reporter | None = None, *, mixins: tuple[type, ...] = ()) -> dict:
    """Run the job described by `config`; returns the metrics also written to OUT/metrics.json.

    `mixins`: classes put before the run's own (trainer.distributed passes its data-parallel one)."""
    reporter = reporter or NullReporter()
    config.check()
    if config.method == "dpo":
        from trainer.dpo import DpoMethod

        run_class = type("DpoRun", (*mixins, DpoMethod, _Run), {})
    else:
        run_class = type("Run", (*mixins, _Run), {}) if mixins else _Run
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


class _Run(RunCheckpoints):
    def __init__(self, config: TrainConfig, reporter: Reporter):
        self.config, self.reporter = config, reporter
        self.out = Path(config.out)
        self.checkpoints = self.out / "checkpoints"
        self.step_metrics: dict = {}  # figures of the last step besides its loss (see trainer.dpo)
        self.merged_dtype = None  # the merged model's dtype, once written
        self.processes = 1  # data-parallel runs (trainer.distributed) train on more, each on batch_size rows
        self.eval_predictions: list[int] = []  # classification: the last eval's label id for each eval feature

    def run(self) -> dict:
        config, reporter = self.config, self.reporter
        self.out.mkdir(parents=True, exist_ok=True)
        seed_everything(config.seed)
        self.device = pick_device(config.device)
        if self.device == "cpu":
            return_freed_memory_promptly()
        self.memory = MemoryMeter(self.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        self.autocast, self.scaler = precision(self.device, self.dtype)
        reporter.on_log(f"preparing data from {config.data}")
        tokenizer = load_tokenizer(resolve_model_path(config.model))
        # prepare raises DataError when no usable training example is left.
        self.train_features, self.eval_features, self.label_mapping, self.data_stats = self._prepare_data(tokenizer)
        reporter.on_log(data_summary(self.data_stats, config.max_length))
        import_quantization_library(config.quantize)
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
        """Train until total_steps, early stopping or a stop request; returns True when stopped on request."""
        reporter = self.reporter
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
            ended = self._between_steps(state)
            if ended is not None:
                return ended
            paused += time.perf_counter() - pause_started
            state["wall_s"] = wall_before + time.perf_counter() - started
        return False

    def _step(self, window: list[dict]) -> float:
        """One optimizer update over the micro-batches in `window`; returns the mean loss per target."""
        task = self.config.task
        targets = sum(target_count(batch, task) for batch in window)
        total = torch.zeros((), device=self.device)
        for batch in self._rows_here(window):
            with self.autocast():
                loss = batch_loss_sum(self.model, batch, task, self.device) / max(targets, 1)
            (self.scaler.scale(loss) if self.scaler else loss).backward()
            total += loss.detach()
        total = self._sum_over_processes(total)
        self._optimizer_step()
        return total.item()

    def _rows_here(self, window: list[dict]) -> list[dict]:
        """The rows of the step's micro-batches this process trains on: all of them (data-parallel runs: a share)."""
        return window

    def _sum_over_processes(self, loss: torch.Tensor) -> torch.Tensor:
        """The step's gradients and loss summed over every process: this one's (data-parallel runs: all-reduced)."""
        return loss

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
        # A stopped run keeps an adapter too: the weights of the checkpoint it just saved, to download or continue.
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
        metrics = run_metrics(self, state, final_eval, stopped)
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
