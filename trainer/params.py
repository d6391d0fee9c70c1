"""Parameter accounting for a model with LoRA: what is trained, and how small the adapter is next to the base.

`trainer.estimate` computes the same numbers without a model (from recorded layer shapes); the tests keep
the two equal.
"""
from __future__ import annotations

from torch import nn

from trainer.adapter_io import adapter_state_dict
from trainer.estimate import parameter_summary
from trainer.inject import lora_modules


def parameter_report(model: nn.Module, modules_to_save: list[str] | None = None) -> dict:
    """Counts for a LoRA-wrapped model.

    total: every parameter (base + LoRA); trainable: those with requires_grad; percent: 100·trainable/total;
    adapter_bytes: bytes of the tensors an adapter file holds (LoRA A/B + modules_to_save, headers excluded);
    base_model_bytes: bytes of the base parameters (LoRA excluded); ratio: adapter_bytes / base_model_bytes.
    `modules_to_save` defaults to the trainable modules that are not LoRA (the classifier head).
    """
    lora_ids = {id(p) for _, module in lora_modules(model) for p in (module.lora_A.weight, module.lora_B.weight)}
    params = list(model.parameters())  # shared (tied) parameters appear once
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    base_bytes = sum(_nbytes(p) for p in params if id(p) not in lora_ids)
    if modules_to_save is None:
        modules_to_save = _trainable_non_lora_modules(model, lora_ids)
    adapter_bytes = sum(_nbytes(t) for t in adapter_state_dict(model, modules_to_save).values())
    return parameter_summary(total, trainable, adapter_bytes, base_bytes)


def _nbytes(tensor) -> int:
    return tensor.numel() * tensor.element_size()


def _trainable_non_lora_modules(model: nn.Module, lora_ids: set[int]) -> list[str]:
    names = []
    for name, module in model.named_modules():
        own = list(module.parameters(recurse=False))
        if any(p.requires_grad and id(p) not in lora_ids for p in own):
            names.append(name)
    return names
