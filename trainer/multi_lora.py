r"""Many LoRA adapters on one loaded base model, chosen per batch row: serving's answer to "one model per adapter".

        x (B, T, in) ──┬──────────── W (frozen) ─────────────────────────┐
                       │                                                  + ──> y[i] = W x[i] + b + s_k · B_k A_k x[i]
                       └── rows of adapter k ── A_k ── B_k ── · s_k ──────┘      with k = slot of row i (none: base)

`MultiLoraLinear` wraps a base layer like `trainer.lora.LoraLinear`, but holds any number of adapters (slots)
and no trainable parameters. Before a forward, `AdapterSet.rows(names)` tells every wrapped layer which slot each
batch row uses; each layer gathers every row's own A and B and adds its update with two batched matmuls (a row
with no adapter gathers zeros), so rows with different adapters, and rows with none, share one forward pass of
the base.

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
    """`base_layer` (nn.Linear or Conv1D) plus per-slot low-rank updates; `row_stack` routes batch rows to slots.

    The slots' weights are kept stacked, zero-padded to the largest rank, with s folded into B and a zero entry 0
    for "no adapter": A (S+1, r, in), sB (S+1, out, r). A forward gathers each row's pair and runs two batched
    matmuls, so its cost does not grow with the number of different adapters in the batch."""

    def __init__(self, base_layer: nn.Module):
        super().__init__()
        self.base_layer = base_layer
        self.fan_in_fan_out = isinstance(base_layer, Conv1D)
        self.updates: dict[int, tuple[torch.Tensor, torch.Tensor, float]] = {}  # slot -> (A (r, in), B (out, r), s)
        self.stack_a: torch.Tensor | None = None
        self.stack_b: torch.Tensor | None = None
        self.row_stack: torch.Tensor | None = None  # (B,) index into the stacks; set by AdapterSet.rows

    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    def restack(self, order: list[int]) -> None:
        """Rebuild the stacks for the slots in `order` (stack entry i + 1 is slot order[i])."""
        if not self.updates:
            self.stack_a = self.stack_b = None
            return
        in_features, out_features = _features(self.base_layer)
        rank = max(a.shape[0] for a, _, _ in self.updates.values())
        some_a = next(iter(self.updates.values()))[0]
        stack_a = torch.zeros(len(order) + 1, rank, in_features, dtype=some_a.dtype, device=some_a.device)
        stack_b = torch.zeros(len(order) + 1, out_features, rank, dtype=some_a.dtype, device=some_a.device)
        for i, slot in enumerate(order, start=1):
            if slot in self.updates:
                a, b, scaling = self.updates[slot]
                stack_a[i, :a.shape[0]] = a
                stack_b[i, :, :b.shape[1]] = b * scaling
        self.stack_a, self.stack_b = stack_a, stack_b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)  # (B, T, out)
        if self.row_stack is None or self.stack_a is None:
            return y
        a = self.stack_a.index_select(0, self.row_stack)  # (B, r, in)
        b = self.stack_b.index_select(0, self.row_stack)  # (B, out, r)
        x3 = x.reshape(x.shape[0], -1, x.shape[-1]).to(a.dtype)  # (B, T, in)
        delta = torch.bmm(torch.bmm(x3, a.transpose(1, 2)), b.transpose(1, 2))  # (B, T, r) -> (B, T, out)
        return y + delta.view(y.shape).to(y.dtype)

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
        self._restack()
        return slot

    def remove(self, name: str) -> None:
        """Drop the adapter `name` (its tensors are freed; the wrapped layers stay, cheap without slots)."""
        self._drop_slot(self.slots.pop(name))
        self._restack()

    def _drop_slot(self, slot: int) -> None:
        for layer in self.layers.values():
            layer.updates.pop(slot, None)

    def _restack(self) -> None:
        order = sorted(self.slots.values())
        for layer in self.layers.values():
            layer.restack(order)

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
        entry = {slot: i for i, slot in enumerate(sorted(self.slots.values()), start=1)}
        row_stack = None
        if any(name is not None for name in names):  # else: the base alone, nothing to add
            row_stack = torch.tensor([0 if name is None else entry[self.slots[name]] for name in names],
                                     device=device)
        for layer in self.layers.values():
            layer.row_stack = row_stack
        try:
            yield
        finally:
            for layer in self.layers.values():
                layer.row_stack = None


def _features(layer: nn.Module) -> tuple[int, int]:
    """(in, out) of a linear layer; Conv1D stores its weight as (in, out)."""
    shape = tuple(layer.weight.shape)
    return shape if isinstance(layer, Conv1D) else shape[::-1]
