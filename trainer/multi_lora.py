r"""Many LoRA adapters on one loaded base model, chosen per batch row: serving's answer to "one model per adapter".

        x (B, T, in) ──┬──────────── W (frozen) ─────────────────────────┐
                       │                                                  + ──> y[i] = W x[i] + b + s_k · B_k A_k x[i]
                       └── rows of adapter k ── A_k ── B_k ── · s_k ──────┘      with k = slot of row i (none: base)

`MultiLoraLinear` wraps a base layer like `trainer.lora.LoraLinear`, but holds any number of adapters (slots)
and no trainable parameters. Before a forward, `AdapterSet.rows(names)` tells every wrapped layer which slot each
batch row uses; each layer adds, for each slot present, that slot's update to its rows only (one index_add per
slot), so rows with different adapters, and rows with none, share one forward pass of the base.

`AdapterSet` loads adapters in PEFT's layout (what `trainer.adapter_io.save_adapter` writes) into slots and
removes them again; the base weights are never touched. Only LoRA weights are supported: adapters with fully
trained modules (a classification head) would need their own copy of those modules, so they are refused.
"""
from __future__ import annotations

import contextlib
import math
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from transformers.pytorch_utils import Conv1D

from trainer.adapter_io import PREFIX, WEIGHTS_FILE, read_adapter_config
from trainer.errors import TrainerError


class MultiLoraLinear(nn.Module):
    """`base_layer` (nn.Linear or Conv1D) plus per-slot low-rank updates; `groups` routes batch rows to slots."""

    def __init__(self, base_layer: nn.Module):
        super().__init__()
        self.base_layer = base_layer
        self.fan_in_fan_out = isinstance(base_layer, Conv1D)
        self.updates: dict[int, tuple[torch.Tensor, torch.Tensor, float]] = {}  # slot -> (A (r, in), B (out, r), s)
        self.groups: list[tuple[int, torch.Tensor]] = []  # (slot, row indices); set by AdapterSet.rows

    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)  # (B, T, out)
        for slot, rows in self.groups:
            update = self.updates.get(slot)
            if update is None:  # this adapter does not adapt this layer
                continue
            a, b, scaling = update
            delta = (x.index_select(0, rows).to(a.dtype) @ a.T) @ b.T  # (rows, T, r) -> (rows, T, out)
            y = y.index_add(0, rows, (delta * scaling).to(y.dtype))
        return y

    def extra_repr(self) -> str:
        return f"slots={sorted(self.updates)}"


class AdapterSet:
    """The adapters loaded on `model`, each in a slot under a caller-chosen name."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.slots: dict[str, int] = {}
        self.layers: dict[str, MultiLoraLinear] = {}
        self._next_slot = 0

    def __contains__(self, name: str) -> bool:
        return name in self.slots

    def add(self, name: str, adapter_dir: str | Path) -> int:
        """Load the adapter in `adapter_dir` under `name` (replacing one of that name); returns its slot."""
        config = read_adapter_config(adapter_dir)
        path = Path(adapter_dir) / WEIGHTS_FILE
        if not path.is_file():
            raise TrainerError(f"{adapter_dir} has no {WEIGHTS_FILE}")
        tensors = {key.removeprefix(PREFIX): value for key, value in load_file(str(path)).items()}
        others = sorted(key for key in tensors if not key.endswith((".lora_A.weight", ".lora_B.weight")))
        if others or config.get("modules_to_save"):
            raise TrainerError(f"{adapter_dir} trains whole modules ({', '.join(others) or 'modules_to_save'}); "
                               "serving takes LoRA-only (causal-LM) adapters")
        modules = sorted({key.rsplit(".lora_", 1)[0] for key in tensors})
        if not modules:
            raise TrainerError(f"{adapter_dir}/{WEIGHTS_FILE} holds no LoRA weights")
        named = dict(self.model.named_modules())
        for module in modules:
            if module not in named and module not in self.layers:
                raise TrainerError(f"{adapter_dir} does not fit this base model: it has no module {module}")
        alpha, rslora = float(config["lora_alpha"]), bool(config.get("use_rslora", False))
        if name in self.slots:
            self.remove(name)
        slot, self._next_slot = self._next_slot, self._next_slot + 1
        device = next(self.model.parameters()).device
        for module in modules:
            a, b = tensors[f"{module}.lora_A.weight"], tensors[f"{module}.lora_B.weight"]
            layer = self._wrapped(module)
            in_features, out_features = _features(layer.base_layer)
            if a.shape[1] != in_features or b.shape[0] != out_features or a.shape[0] != b.shape[1]:
                self._drop_slot(slot)
                raise TrainerError(f"{adapter_dir} does not fit this base model: {module} takes {in_features} -> "
                                   f"{out_features}, the adapter's A is {tuple(a.shape)} and B {tuple(b.shape)}")
            rank = a.shape[0]
            layer.updates[slot] = (a.to(device), b.to(device), alpha / (math.sqrt(rank) if rslora else rank))
        self.slots[name] = slot
        return slot

    def remove(self, name: str) -> None:
        """Drop the adapter `name` (its tensors are freed; the wrapped layers stay, cheap without slots)."""
        self._drop_slot(self.slots.pop(name))

    def _drop_slot(self, slot: int) -> None:
        for layer in self.layers.values():
            layer.updates.pop(slot, None)

    def _wrapped(self, module_name: str) -> MultiLoraLinear:
        if module_name not in self.layers:
            parent_name, _, child = module_name.rpartition(".")
            parent = self.model.get_submodule(parent_name) if parent_name else self.model
            base = getattr(parent, child)
            if not isinstance(base, (nn.Linear, Conv1D)):
                raise TrainerError(f"module {module_name} is a {type(base).__name__}, not a linear layer")
            self.layers[module_name] = MultiLoraLinear(base)
            setattr(parent, child, self.layers[module_name])
        return self.layers[module_name]

    @contextlib.contextmanager
    def rows(self, names: list[str | None]):
        """Within the block, batch row i of every forward uses adapter `names[i]` (None: the base alone)."""
        unknown = [name for name in names if name is not None and name not in self.slots]
        if unknown:
            raise KeyError(f"adapter {unknown[0]!r} is not loaded")
        device = next(self.model.parameters()).device
        by_slot: dict[int, list[int]] = {}
        for row, name in enumerate(names):
            if name is not None:
                by_slot.setdefault(self.slots[name], []).append(row)
        groups = [(slot, torch.tensor(rows, device=device)) for slot, rows in by_slot.items()]
        for layer in self.layers.values():
            layer.groups = groups
        try:
            yield
        finally:
            for layer in self.layers.values():
                layer.groups = []


def _features(layer: nn.Module) -> tuple[int, int]:
    """(in, out) of a linear layer; Conv1D stores its weight as (in, out)."""
    shape = tuple(layer.weight.shape)
    return shape if isinstance(layer, Conv1D) else shape[::-1]
