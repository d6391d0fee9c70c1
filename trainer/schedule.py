"""The learning-rate schedule: linear warmup from 0, then cosine or linear decay to 0.

Same curves as transformers' `get_cosine_schedule_with_warmup` / `get_linear_schedule_with_warmup`, as a
`LambdaLR` so its state goes into checkpoints with `state_dict()` like any torch scheduler.
"""
from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_steps_for(total_steps: int, warmup_fraction: float) -> int:
    """Warmup length in optimizer steps: the fraction of all steps, rounded up (as transformers does)."""
    return math.ceil(total_steps * warmup_fraction)


def lr_factor(step: int, total_steps: int, warmup_steps: int, kind: str = "cosine") -> float:
    """Multiplier of the base learning rate for optimizer step `step` (0-based)."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if kind == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    if kind == "linear":
        return max(0.0, 1.0 - progress)
    raise ValueError(f"unknown scheduler {kind!r}")


def make_scheduler(optimizer: Optimizer, kind: str, total_steps: int, warmup_steps: int) -> LambdaLR:
    return LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, warmup_steps, kind))
