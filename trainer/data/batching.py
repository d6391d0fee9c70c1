"""Batches: which examples go together (length-grouped, resumable), packing, and padding to tensors.

`batch_order(features, batch_size, seed=, epoch=)` is a pure function of (lengths, batch size, seed, epoch), so a
resumed run rebuilds the same order and skips to its saved batch index. Within an epoch the examples are
shuffled, cut into mega-batches of GROUP_BATCHES batches, each sorted by length and cut into batches, so a batch
holds examples of similar length and pads little; the batch order is shuffled again, except that the batch holding
the longest example goes first (an out-of-memory error shows at step 1, not an hour in).

Padding is dynamic: `collate` pads to the longest sequence of its batch, never to max_length.
Feature shapes: causal LM {"input_ids": [T], "labels": [T]}; classification {"input_ids": [T], "label": int}.
`collate` returns CPU tensors input_ids (B, T), attention_mask (B, T), labels (B, T) padded with -100 for causal
LM or (B,) class ids for classification.
"""
from __future__ import annotations

import random
from typing import Sequence

import torch

from trainer.data.render import IGNORE_INDEX

GROUP_BATCHES = 50


def batch_order(features: Sequence[dict], batch_size: int, *, seed: int, epoch: int) -> list[list[int]]:
    """Indices of `features`, batched: the same (features' lengths, batch_size, seed, epoch) give the same order."""
    rng = random.Random(seed * 1_000_003 + epoch)
    indices = list(range(len(features)))
    rng.shuffle(indices)
    length = [len(feature["input_ids"]) for feature in features]
    group = batch_size * GROUP_BATCHES
    batches = []
    for start in range(0, len(indices), group):
        chunk = sorted(indices[start:start + group], key=lambda i: -length[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    if batches:
        longest = max(range(len(batches)), key=lambda b: length[batches[b][0]])
        batches.insert(0, batches.pop(longest))
    return batches


def pack(features: Sequence[dict], max_length: int) -> list[dict]:
    """Concatenate causal-LM features (each already ends with EOS) and cut the stream into max_length chunks.

    Labels travel with their tokens, so prompt tokens stay masked. Attention is not blocked between packed
    examples (the usual simple packing); the last chunk may be shorter.
    """
    ids: list[int] = []
    labels: list[int] = []
    for feature in features:
        ids += feature["input_ids"]
        labels += feature["labels"]
    return [{"input_ids": ids[i:i + max_length], "labels": labels[i:i + max_length]}
            for i in range(0, len(ids), max_length)
            if any(label != IGNORE_INDEX for label in labels[i + 1:i + max_length])]


def padding_fraction(features: Sequence[dict], batches: Sequence[Sequence[int]]) -> float:
    """Share of the padded (B, T) positions that are padding, over all batches."""
    real = padded = 0
    for batch in batches:
        lengths = [len(features[i]["input_ids"]) for i in batch]
        real += sum(lengths)
        padded += max(lengths) * len(lengths)
    return 1 - real / padded if padded else 0.0


def collate(features: Sequence[dict], pad_id: int | None) -> dict[str, torch.Tensor]:
    """Pad a batch of features on the right to its longest sequence."""
    pad_id = 0 if pad_id is None else pad_id  # masked out by attention_mask and -100 labels anyway
    width = max(len(feature["input_ids"]) for feature in features)
    input_ids = torch.full((len(features), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(features), width), dtype=torch.long)
    for row, feature in enumerate(features):
        size = len(feature["input_ids"])
        input_ids[row, :size] = torch.tensor(feature["input_ids"], dtype=torch.long)
        attention_mask[row, :size] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if "label" in features[0]:
        batch["labels"] = torch.tensor([feature["label"] for feature in features], dtype=torch.long)
    else:
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        for row, feature in enumerate(features):
            labels[row, :len(feature["labels"])] = torch.tensor(feature["labels"], dtype=torch.long)
        batch["labels"] = labels
    return batch
