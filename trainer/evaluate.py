"""How a model is measured: the training loss and the held-out metrics.

Causal LM: mean cross-entropy over the tokens whose label is not -100 (next-token, labels shifted by one as
in transformers), and perplexity = exp(loss). Classification: mean cross-entropy over examples, accuracy,
macro-F1 over the classes that occur in the labels or the predictions (as scikit-learn's default), and a
confusion matrix with rows = true label, columns = predicted label.
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Iterable

import torch
import torch.nn.functional as F

from trainer.data.render import IGNORE_INDEX
from trainer.lm_loss import lm_loss_sum, supports_hidden_state_loss

EVAL_BATCH_SIZE_FACTOR = 2  # no activations kept for backward: eval batches can be bigger



def target_count(batch: dict, task: str) -> int:
    """How many targets a batch's loss averages over: predicted tokens (causal) or examples (classification)."""
    labels = batch["labels"]
    if task == "classification":
        return int(labels.shape[0])
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def loss_sum(logits: torch.Tensor, labels: torch.Tensor, task: str) -> torch.Tensor:
    """Summed cross-entropy. logits: (B, T, V) with labels (B, T), or (B, C) with labels (B,)."""
    if task == "classification":
        return F.cross_entropy(logits.float(), labels, reduction="sum")
    # Token t predicts token t+1: shift the labels left (the last position gets none) rather than slicing the
    # logits, which would copy all (B, T, V) of them.
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")


def forward_logits(model, batch: dict, device) -> torch.Tensor:
    return model(input_ids=batch["input_ids"].to(device, non_blocking=True),
                 attention_mask=batch["attention_mask"].to(device, non_blocking=True)).logits


def batch_loss_sum(model, batch: dict, task: str, device) -> torch.Tensor:
    """`loss_sum` of the model on a batch. A causal LM with a plain output layer gets it from its hidden states
    (`trainer.lm_loss`: logits only where there are labels, never (B, T, V) at once); others via full logits."""
    labels = batch["labels"].to(device, non_blocking=True)
    if task != "classification" and supports_hidden_state_loss(model):
        return lm_loss_sum(model, batch["input_ids"].to(device, non_blocking=True),
                           batch["attention_mask"].to(device, non_blocking=True), labels)
    return loss_sum(forward_logits(model, batch, device), labels, task)


@torch.no_grad()
def evaluate(model, batches: Iterable[dict], task: str, *, label_names: list[str] | None = None,
             device="cpu", autocast=nullcontext, predictions: list[int] | None = None) -> dict:
    """Metrics of `model` over `batches` (dicts of CPU tensors: input_ids, attention_mask, labels). For
    classification, a `predictions` list given gets each example's predicted label id, in batch order."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    guesses: list[torch.Tensor] = []
    truths: list[torch.Tensor] = []
    try:
        for batch in batches:
            count += target_count(batch, task)
            if task != "classification":
                with autocast():
                    total += batch_loss_sum(model, batch, task, device)
                continue
            with autocast():
                logits = forward_logits(model, batch, device)
            total += loss_sum(logits, batch["labels"].to(device), task)
            guesses.append(logits.argmax(-1).cpu())
            truths.append(batch["labels"])
    finally:
        model.train(was_training)
    if count == 0:
        return {}
    loss = total.item() / count
    if task != "classification":
        return {"eval_loss": loss, "perplexity": _safe_exp(loss), "eval_tokens": count}
    names = label_names or [str(i) for i in range(logits.shape[-1])]
    guessed = torch.cat(guesses).tolist()
    if predictions is not None:
        predictions.extend(guessed)
    metrics = classification_metrics(guessed, torch.cat(truths).tolist(), names)
    return {"eval_loss": loss, **metrics, "eval_examples": count}


def classification_metrics(predictions: list[int], labels: list[int], label_names: list[str]) -> dict:
    """accuracy, macro_f1 and confusion_matrix {labels, matrix[true][predicted]} from label ids."""
    size = len(label_names)
    matrix = [[0] * size for _ in range(size)]
    for truth, guess in zip(labels, predictions):
        matrix[truth][guess] += 1
    correct = sum(matrix[i][i] for i in range(size))
    seen = [i for i in range(size) if any(matrix[i]) or any(row[i] for row in matrix)]
    f1s = [_f1(matrix, i) for i in seen]
    return {
        "accuracy": correct / max(1, len(labels)),
        "macro_f1": sum(f1s) / max(1, len(f1s)),
        "confusion_matrix": {"labels": list(label_names), "matrix": matrix},
    }


def _f1(matrix: list[list[int]], cls: int) -> float:
    true_positive = matrix[cls][cls]
    predicted = sum(row[cls] for row in matrix)
    actual = sum(matrix[cls])
    return 2 * true_positive / (predicted + actual) if predicted + actual else 0.0


def _safe_exp(loss: float) -> float:
    return math.exp(loss) if loss < 700 else float("inf")
