"""What a run keeps along the way: periodic evals, the best checkpoint, early stopping, checkpoints and resuming.

`RunCheckpoints` is a base class of `trainer.train`'s run (methods such as trainer.distributed's mixin override
these in turn). It reads the run's attributes set up by trainer.train (config, reporter, model, optimizer,
scheduler, scaler, eval_features, total_steps, processes, ...). Between two optimizer steps `_between_steps`
evaluates every `eval_every` steps (recording the best for `keep=best` and early stopping, trainer.best), honours
a stop request with a checkpoint, and checkpoints every `checkpoint_every` steps. Every checkpoint carries the
run's state (histories, token counts, times, best), so `config.resume` continues from the newest exactly.
"""
from __future__ import annotations

from trainer import best, checkpoint, sample_answers
from trainer.data.batching import collate
from trainer.errors import ConfigError
from trainer.evaluate import EVAL_BATCH_SIZE_FACTOR, evaluate


class RunCheckpoints:
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
        saved_batch, batch = extra.get("global_batch_size"), self.config.batch_size * self.processes
        if saved_batch not in (None, batch):  # None: written before data-parallel runs existed
            raise ConfigError(f"{found} was written by a run of {extra.get('processes', 1)} process(es) with "
                              f"{saved_batch} rows a batch in all; this one has {self.processes} x "
                              f"{self.config.batch_size} = {batch}: resume with processes x batch size = "
                              f"{saved_batch}", "resume")
        state.update(extra["state"], step=restored["step"], history=restored["history"],
                     epoch=restored["position"]["epoch"], batch=restored["position"]["batch"],
                     resumed_from_step=restored["step"])
        self.reporter.on_log(f"resumed from {found.name}")
        return state

    def _between_steps(self, state: dict) -> bool | None:
        """The periodic eval, a stop request and the periodic checkpoint after a step. None: the loop goes on;
        otherwise it ends, returning this (True: stopped on request, False: early stopping)."""
        config, reporter = self.config, self.reporter
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
        return None

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
                                   extra={"state": kept, "total_steps": self.total_steps,
                                          "processes": self.processes,
                                          "global_batch_size": self.config.batch_size * self.processes},
                                   scaler=self.scaler)
