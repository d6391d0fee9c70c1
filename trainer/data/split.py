"""Deterministic train/eval split: the same rows, seed and fraction always give the same split.

`split_indices` shuffles row indices with `random.Random(seed)` and holds out `round(n * eval_fraction)` of them
(at least 1 when the fraction is above 0 and a
row can be spared, never all). With `labels` the split is stratified: each label holds out
its own share and keeps at least one example for training, so no eval label is unseen in training.
"""
from __future__ import annotations

import random
from collections import defaultdict
from typing import Sequence


def split_indices(n: int, eval_fraction: float, seed: int,
                  labels: Sequence[str] | None = None) -> tuple[list[int], list[int]]:
    """(train indices, eval indices), each sorted ascending."""
    if eval_fraction <= 0 or n < 2:
        return list(range(n)), []
    rng = random.Random(seed)
    groups: dict[str, list[int]] = defaultdict(list)
    for index in range(n):
        groups[labels[index] if labels is not None else ""].append(index)
    held_out: list[int] = []
    for key in sorted(groups):
        members = groups[key]
        rng.shuffle(members)
        share = round(len(members) * eval_fraction)
        if labels is None:
            share = min(max(share, 1), len(members) - 1)
        else:
            share = min(share, len(members) - 1)
        held_out += members[:share]
    if not held_out:  # every label too small to give up a share: still hold one row out
        largest = max(groups.values(), key=len)
        held_out = largest[:1] if len(largest) > 1 else []
    held = set(held_out)
    return [i for i in range(n) if i not in held], sorted(held_out)
