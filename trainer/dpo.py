r"""Direct Preference Optimization (Rafailov et al., 2023) on a LoRA adapter: the loss, its eval, and the run.

For a prompt x with a chosen answer c and a rejected one r, the policy π is base + adapter and the reference
π_ref is *the same base with the adapter switched off*: no second model copy is ever in memory.

    reward(y) = β · (log π(y|x) − log π_ref(y|x))          the implicit reward of an answer
    loss      = −log σ(reward(c) − reward(r))              mean over pairs (TRL's loss_type="sigmoid")
              + rpo_alpha · NLL(c)                         optional SFT term (TRL's loss_type=["sigmoid", "sft"],
                                                           loss_weights=[1, rpo_alpha]; its former `rpo_alpha`)
    margin    = reward(c) − reward(r);   reward accuracy = share of pairs with margin > 0

log π(y|x) is the sum of the answer tokens' log-probabilities (`trainer.lm_loss.answer_log_probs`): only the
hidden states of answer positions go through the output layer, so no full-vocabulary logits are formed for the
prompt (a (B, T, V) tensor is only built for heads that `supports_hidden_state_loss` refuses).
NLL(c) is the mean −log-probability of the chosen answers' tokens, averaged over all of the batch's chosen tokens
(not per answer), as in TRL. Pure DPO may push both answers down and give the freed probability to junk tokens;
the SFT term keeps the chosen answers likely, which a small model needs before its greedy answers show the style.
A batch of B pairs is one forward of 2B rows (chosen rows first), and one more without gradients for π_ref.

Held-out metrics: `preference_accuracy` is the share of pairs where the model itself gives the chosen answer a
higher log-probability than the rejected one (meaningful before training too, unlike the reward accuracy, which
is 0 while π = π_ref), next to the DPO loss, the mean margin and the mean log-probabilities.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F

from trainer.data.batching import batch_order, collate
from trainer.data.dataset import load_examples
from trainer.data.preference import FORMAT, prompt_layout
from trainer.data.render import encode_answers, ensure_chat_template
from trainer.data.split import split_indices
from trainer.errors import DataError
from trainer.evaluate import EVAL_BATCH_SIZE_FACTOR, forward_logits
from trainer.inject import lora_modules
from trainer.lm_loss import answer_log_probs, supports_hidden_state_loss

STEP_KEYS = ("reward_margin", "reward_accuracy", "chosen_logp", "rejected_logp")


@contextmanager
def adapter_disabled(model):
    """Inside, every LoRA layer computes its base layer alone: the model is the reference π_ref."""
    layers = [module for _, module in lora_modules(model)]
    for layer in layers:
        layer.forward = layer.base_layer.forward  # an instance attribute shadows LoraLinear.forward
    try:
        yield model
    finally:
        for layer in layers:
            del layer.forward


def sequence_log_probs(model, batch: dict, device) -> torch.Tensor:
    """(B,) float32: log π(answer | prompt) of each row, summed over the tokens whose label is not -100."""
    input_ids = batch["input_ids"].to(device, non_blocking=True)
    attention_mask = batch["attention_mask"].to(device, non_blocking=True)
    labels = batch["labels"].to(device, non_blocking=True)
    if supports_hidden_state_loss(model):
        return answer_log_probs(model, input_ids, attention_mask, labels)
    logits = forward_logits(model, batch, device)[:, :-1].float()
    targets = labels[:, 1:]
    keep = targets != -100
    token_logps = torch.log_softmax(logits, dim=-1).gather(2, targets.clamp(min=0)[..., None])[..., 0]
    return (token_logps * keep).sum(dim=1)


def dpo_loss(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
             beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-pair losses, chosen rewards, rejected rewards), each (B,), from the four (B,) log-probabilities."""
    chosen_rewards = beta * (chosen - ref_chosen)
    rejected_rewards = beta * (rejected - ref_rejected)
    return -F.logsigmoid(chosen_rewards - rejected_rewards), chosen_rewards.detach(), rejected_rewards.detach()


def collate_pairs(pairs: list[dict], pad_id: int | None) -> dict:
    """One padded batch of 2B rows: the B chosen answers, then the B rejected ones."""
    return collate([pair["chosen"] for pair in pairs] + [pair["rejected"] for pair in pairs], pad_id)


def pair_log_probs(model, batch: dict, device, autocast=nullcontext) -> tuple[torch.Tensor, torch.Tensor]:
    """(policy log-probs (2B,) with gradients when enabled, reference log-probs (2B,) without)."""
    with autocast():
        policy = sequence_log_probs(model, batch, device)
    with torch.no_grad(), adapter_disabled(model), autocast():
        reference = sequence_log_probs(model, batch, device)
    return policy, reference


def chosen_tokens(batch: dict) -> torch.Tensor:
    """The number of answer tokens in the batch's chosen rows (its first half)."""
    labels = batch["labels"]
    return (labels[: labels.shape[0] // 2, 1:] != -100).sum()


def pair_sums(policy: torch.Tensor, reference: torch.Tensor, beta: float, rpo_alpha: float = 0.0,
              tokens: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """(summed loss over the pairs, with gradients; {name: summed value} of the loss and the logged metrics).
    With `rpo_alpha`, `tokens` is `chosen_tokens(batch)`: each pair's loss gains rpo_alpha times the batch's mean
    NLL per chosen token."""
    chosen, rejected = policy.chunk(2)
    ref_chosen, ref_rejected = reference.chunk(2)
    losses, chosen_rewards, rejected_rewards = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta)
    if rpo_alpha:
        losses = losses + rpo_alpha * -chosen.sum() / tokens.to(chosen.device).clamp(min=1)
    margins = chosen_rewards - rejected_rewards
    sums = {"loss": losses.detach().sum(), "reward_margin": margins.sum(), "reward_accuracy": (margins > 0).sum(),
            "chosen_logp": chosen.detach().sum(), "rejected_logp": rejected.detach().sum(),
            "preference_accuracy": (chosen.detach() > rejected.detach()).sum()}
    return losses.sum(), sums


@torch.no_grad()
def evaluate_pairs(model, batches, beta: float, rpo_alpha: float = 0.0, *, device="cpu",
                   autocast=nullcontext) -> dict:
    """Held-out DPO metrics over `batches` (from `collate_pairs`); {} when there is no pair."""
    was_training = model.training
    model.eval()
    totals: dict[str, float] = {}
    count = 0
    try:
        for batch in batches:
            _, sums = pair_sums(*pair_log_probs(model, batch, device, autocast), beta, rpo_alpha, chosen_tokens(batch))
            count += batch["input_ids"].shape[0] // 2
            for key, value in sums.items():
                totals[key] = totals.get(key, 0.0) + float(value)
    finally:
        model.train(was_training)
    if count == 0:
        return {}
    means = {key: value / count for key, value in totals.items()}
    return {"eval_loss": means.pop("loss"), **means, "eval_pairs": count}


def pair_features(examples: list[dict], tokenizer, *, max_length: int) -> tuple[list[dict], dict]:
    """([{"chosen": feature, "rejected": feature}], counts {truncated, no_loss}) for DPO. A pair is left out when
    either answer has no token left after truncation to `max_length`."""
    chosen = encode_answers(examples, "chosen", tokenizer, max_length=max_length)
    rejected = encode_answers(examples, "rejected", tokenizer, max_length=max_length)
    pairs, counts = [], {"truncated": 0, "no_loss": 0}
    for good, bad in zip(chosen, rejected):
        counts["truncated"] += good.full_length > max_length or bad.full_length > max_length
        if good.loss_tokens == 0 or bad.loss_tokens == 0:
            counts["no_loss"] += 1
        else:
            pairs.append({"chosen": good.feature, "rejected": bad.feature})
    return pairs, counts


def prepare_pairs(config, tokenizer) -> tuple[list[dict], list[dict], dict]:
    """(training pairs, held-out pairs, data stats) for a DPO run on `config.data` (preference rows)."""
    problems: list[dict] = []
    fmt, examples, skipped = load_examples(config.data, config.format, config.column_mapping, "causal-lm", problems)
    if fmt != FORMAT:
        raise DataError(f"DPO trains on preference rows (prompt or messages, chosen, rejected; or OpenAI's input, "
                        f"preferred_output, non_preferred_output), but {config.data} is in the {fmt} format")
    stats = {"format": fmt, "task": config.task, "rows": len(examples) + skipped, "skipped_rows": skipped,
             "problems": problems, "packed": False, "prompt_layout": prompt_layout(examples)}
    if config.eval_data:
        mapping = config.column_mapping if config.eval_column_mapping is None else config.eval_column_mapping
        _, held_out, stats["eval_skipped_rows"] = load_examples(config.eval_data, fmt, mapping)
        training = examples
    else:
        train_idx, eval_idx = split_indices(len(examples), config.eval_fraction, config.seed)
        training, held_out = [examples[i] for i in train_idx], [examples[i] for i in eval_idx]
    train, train_counts = pair_features(training, tokenizer, max_length=config.max_length)
    held, eval_counts = pair_features(held_out, tokenizer, max_length=config.max_length)
    if not train:
        raise DataError("no usable preference pairs are left after validation; run validate to see why")
    stats.update(train_examples=len(train), eval_examples=len(held),
                 truncated_rows=train_counts["truncated"] + eval_counts["truncated"],
                 no_loss_rows=train_counts["no_loss"] + eval_counts["no_loss"],
                 chat=any("messages" in example for example in examples))
    return train, held, stats


class DpoMethod:
    """What a DPO run changes in `trainer.train`'s run (which mixes this class in before its own): pairs for
    examples, the DPO loss for the step and DPO metrics for evals."""

    def _prepare_data(self, tokenizer):
        train, held, stats = prepare_pairs(self.config, tokenizer)
        self.pair_lengths = [{"input_ids": range(max(len(p["chosen"]["input_ids"]), len(p["rejected"]["input_ids"])))}
                             for p in train]
        return train, held, [], stats

    def _load_model(self) -> None:
        super()._load_model()
        if self.data_stats["chat"]:  # saved with the adapter, as for chat SFT
            ensure_chat_template(self.tokenizer)

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        return batch_order(self.pair_lengths, self.config.batch_size, seed=self.config.seed, epoch=epoch)

    def _collate(self, features: list[dict]) -> dict:
        return collate_pairs(features, self.tokenizer.pad_token_id)

    def _step(self, window: list[dict]) -> float:
        """One optimizer update over the pair batches in `window`; returns the mean DPO loss per pair and keeps
        the step's mean margin, reward accuracy and log-probabilities in `self.step_metrics`."""
        pairs = sum(batch["input_ids"].shape[0] // 2 for batch in window)
        totals = dict.fromkeys(("loss",) + STEP_KEYS, 0.0)
        for batch in window:
            policy, reference = pair_log_probs(self.model, batch, self.device, self.autocast)
            loss, sums = pair_sums(policy, reference, self.config.beta, self.config.rpo_alpha, chosen_tokens(batch))
            loss = loss / pairs
            (self.scaler.scale(loss) if self.scaler else loss).backward()
            for key in totals:
                totals[key] += float(sums[key])
        self._optimizer_step()
        means = {key: value / pairs for key, value in totals.items()}
        loss = means.pop("loss")
        self.step_metrics = means
        return loss

    def _evaluate(self) -> dict | None:
        if not self.eval_features:
            return None
        size = self.config.batch_size * EVAL_BATCH_SIZE_FACTOR
        batches = (collate_pairs(self.eval_features[start:start + size], self.tokenizer.pad_token_id)
                   for start in range(0, len(self.eval_features), size))
        return evaluate_pairs(self.model, batches, self.config.beta, self.config.rpo_alpha, device=self.device,
                              autocast=self.autocast)
