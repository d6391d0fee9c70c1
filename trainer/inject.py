"""Put LoRA into a Hugging Face model and take it out again.

`apply_lora` freezes the base, swaps each targeted nn.Linear / Conv1D for a `LoraLinear` in place, and for
classification makes the new head (`classifier` or `score`, PEFT's `modules_to_save` for SEQ_CLS) trainable,
since a randomly initialised head cannot be adapted by a low-rank update. `merge_and_unload` folds the
updates into the base weights and puts plain layers back.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from torch import nn

from trainer.config import LoraSettings
from trainer.errors import TargetError
from trainer.lora import LoraLinear
from trainer.targets import CLASSIFIER_HEADS, resolve_targets



@dataclass
class LoraHandle:
    """What `apply_lora` did: the wrapped module names and the fully trained modules (for save_adapter)."""

    target_modules: list[str]
    modules_to_save: list[str]


def apply_lora(model: nn.Module, settings: LoraSettings, task: str) -> LoraHandle:
    """Freeze `model`, wrap the modules `settings.targets` selects, and unfreeze a classifier head if `task`
    is "classification". Changes `model` in place."""
    if any(True for _ in lora_modules(model)):
        raise TargetError("this model already has LoRA layers; load a fresh base model")
    targets = resolve_targets(model, settings.targets)
    model.requires_grad_(False)
    inject_lora(model, targets, rank=settings.rank, alpha=settings.alpha, dropout=settings.dropout,
                rslora=settings.rslora)
    heads = classifier_heads(model) if task == "classification" else []
    for name in heads:
        model.get_submodule(name).requires_grad_(True)
    return LoraHandle(target_modules=targets, modules_to_save=heads)


def inject_lora(model: nn.Module, names: list[str], *, rank: int, alpha: float, dropout: float,
                rslora: bool) -> None:
    """Replace each module in `names` (full dotted names) by a LoraLinear around it."""
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoraLinear(getattr(parent, child), rank, alpha, dropout, rslora))


def classifier_heads(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_children() if name in CLASSIFIER_HEADS]


def lora_modules(model: nn.Module) -> Iterator[tuple[str, LoraLinear]]:
    return ((name, module) for name, module in model.named_modules() if isinstance(module, LoraLinear))


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Fold every LoRA update into its base weight and put the plain base layers back; returns `model`."""
    for name, module in list(lora_modules(model)):
        module.merge()
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, module.base_layer)
    return model
