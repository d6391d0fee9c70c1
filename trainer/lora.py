r"""The LoRA layer: a frozen linear layer plus a trainable low-rank update.

        x ──┬──────────── W (frozen, out×in) ───────────┐
            │                                            + ──> y = W x + b + s · B A dropout(x)
            └── dropout ── A (r×in) ── B (out×r) ── · s ─┘

A starts kaiming-uniform (a=√5) and B starts at zero, so the wrapped model is unchanged before training.
s = alpha / r scales the update so that changing r does not change how big it starts out (Hu et al. 2021);
rsLoRA uses alpha / √r instead, which keeps higher ranks from learning too slowly (Kalajdzievski 2023).

GPT-2's `Conv1D` stores its weight transposed, (in, out); `fan_in_fan_out` marks that.

Training speed: the whole layer runs as one autograd node (`_LoraFunction`). It folds the scalings into the
small (N×r) side, adds the update with one addmm, fuses the two input gradients into one addmm, draws its
dropout mask 3-4x faster than bernoulli_ (`dropout_mask`) and keeps only that 1-byte mask (the dropped input
is recomputed in backward). The textbook `base(x) + B(A(dropout(x))) * s` makes five nodes, three extra
passes over the N×out output, and saves a dropped float copy of x per layer. It remains as the fallback
for autocast, a trainable base, and bitsandbytes-quantized bases (trainer.quantized), whose own autograd
function dequantizes W for the base matmul and its input gradient.

Precision: A and B are float32 parameters on any base (AdamW's updates to them are tiny, and fp32 keeps them);
the update is computed in the base's compute dtype (x's dtype: bf16 or fp16 on a low-precision base), with A
and B cast on the way in and their gradients cast back to float32. So a bf16 base runs the fused node too.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from trainer.errors import TrainerError
from trainer.quantized import is_quantized_linear


class LoraLinear(nn.Module):
    """Wraps `base_layer` (nn.Linear or transformers' Conv1D) with a rank-`rank` LoRA update."""

    def __init__(self, base_layer: nn.Module, rank: int, alpha: float, dropout: float = 0.0,
                 rslora: bool = False):
        super().__init__()
        self.base_layer = base_layer
        self.fan_in_fan_out = isinstance(base_layer, Conv1D)
        weight = base_layer.weight
        # nn.Linear and bitsandbytes' quantized linears (whose weight is packed) name their shape.
        self.in_features, self.out_features = (weight.shape if self.fan_in_fan_out
                                               else (base_layer.in_features, base_layer.out_features))
        self.rank = rank
        self.scaling = alpha / (math.sqrt(rank) if rslora else rank)
        # Adapter weights stay float32 even on a bf16/fp16 base: AdamW updates on them are tiny.
        factory = dict(device=weight.device, dtype=torch.float32)
        self.lora_A = nn.Linear(self.in_features, rank, bias=False, **factory)
        self.lora_B = nn.Linear(rank, self.out_features, bias=False, **factory)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.reset_lora_parameters()

    def reset_lora_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    @property
    def weight(self) -> torch.Tensor:
        """The base weight, for code that inspects `module.weight` (e.g. dtype checks in transformers)."""
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base_layer(x)
        a, b = self.lora_A.weight, self.lora_B.weight
        if self._fusable(x):
            p = self.lora_dropout.p if isinstance(self.lora_dropout, nn.Dropout) and self.training else 0.0
            return _LoraFunction.apply(x, self.base_layer.weight, self.base_layer.bias, a, b, self.scaling, p,
                                       self.fan_in_fan_out)
        result = self.base_layer(x)
        dtype = _compute_dtype(x, a)
        update = F.linear(F.linear(self.lora_dropout(x.to(dtype)), a.to(dtype)), b.to(dtype))
        return result + (update * self.scaling).to(result.dtype)

    def _fusable(self, x: torch.Tensor) -> bool:
        base = self.base_layer
        return (x.dtype == base.weight.dtype
                and self.lora_A.weight.dtype in (x.dtype, torch.float32)
                and not base.weight.requires_grad
                and (base.bias is None or not base.bias.requires_grad)
                and not torch.is_autocast_enabled(x.device.type))

    def delta_weight(self) -> torch.Tensor:
        """s · B @ A in float32, laid out like the base weight ((in, out) for Conv1D)."""
        delta = (self.lora_B.weight.float() @ self.lora_A.weight.float()) * self.scaling
        return delta.T if self.fan_in_fan_out else delta

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the base weight (computed in float32, cast back to the weight's dtype)."""
        if is_quantized_linear(self.base_layer):
            raise TrainerError("a LoRA update cannot be added to a quantized weight: dequantize the base first "
                               "(trainer.quantized.dequantize)")
        if not self.merged:
            self._add_to_base(self.delta_weight())
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self._add_to_base(-self.delta_weight())
            self.merged = False

    def _add_to_base(self, delta: torch.Tensor) -> None:
        weight = self.base_layer.weight
        weight.copy_((weight.float() + delta.to(weight.device)).to(weight.dtype))

    def extra_repr(self) -> str:
        return f"rank={self.rank}, scaling={self.scaling:g}, fan_in_fan_out={self.fan_in_fan_out}"


def _compute_dtype(x: torch.Tensor, lora_weight: torch.Tensor) -> torch.dtype:
    """The dtype the LoRA update is computed in: a half-precision input's own, else the adapter weights'."""
    return x.dtype if x.dtype in (torch.bfloat16, torch.float16) else lora_weight.dtype


def _base_forward(x2d: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  fan_in_fan_out: bool) -> torch.Tensor:
    if not fan_in_fan_out:
        return F.linear(x2d, weight, bias)
    return torch.addmm(bias, x2d, weight) if bias is not None else x2d @ weight


def dropout_mask(x2d: torch.Tensor, p: float) -> tuple[torch.Tensor, float]:
    """A 0/1 uint8 keep-mask for dropout with probability p, and the 1/keep scale that makes it unbiased.

    On CPU, per-element RNG (bernoulli_) costs more than the layer's matmul and bool tensors take slow
    unvectorised paths, so: draw 16-bit uniforms four per 64-bit random number, compare them into a uint8
    mask (1 byte per value, multiplies vectorised). p is rounded to a multiple of 2^-16."""
    dropped = round(p * 65536)
    words = torch.randint(-2**63, 2**63 - 1, ((x2d.numel() + 3) // 4,), dtype=torch.int64, device=x2d.device)
    uniform16 = words.view(torch.int16)[:x2d.numel()].view(x2d.shape)
    mask = torch.ge(uniform16, dropped - 32768, out=torch.empty_like(x2d, dtype=torch.uint8))
    return mask, 65536 / (65536 - dropped)


class _LoraFunction(torch.autograd.Function):
    """y = base(x) + s · (dropout(x) Aᵀ) Bᵀ as one node; shapes with N = tokens: x (N, in), h (N, r), y (N, out).

    Dropout keeps only its uint8 mask; its 1/keep scale is applied on the small r-wide side. A and B (float32
    parameters) are used in x's dtype; their gradients are returned in float32."""

    @staticmethod
    def forward(ctx, x, weight, bias, a, b, scaling, p, fan_in_fan_out):
        a, b = a.to(x.dtype), b.to(x.dtype)  # no copy when they already match
        x2d = x.reshape(-1, x.shape[-1])
        mask, keep_scale = dropout_mask(x2d, p) if p > 0 else (None, 1.0)
        h = (x2d if mask is None else x2d * mask) @ a.T
        if mask is not None:
            h.mul_(keep_scale)
        y = _base_forward(x2d, weight, bias, fan_in_fan_out).addmm_(h, b.T, alpha=scaling)
        ctx.save_for_backward(x2d, weight, a, b, h, mask)
        ctx.scaling, ctx.keep_scale, ctx.fan_in_fan_out = scaling, keep_scale, fan_in_fan_out
        return y.view(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, grad_y):
        x2d, weight, a, b, h, mask = ctx.saved_tensors
        g = grad_y.reshape(-1, grad_y.shape[-1])
        grad_h = (g @ b).mul_(ctx.scaling * ctx.keep_scale)  # (N, r): both scalings on the small side
        grad_a = (grad_h.T @ (x2d if mask is None else x2d * mask)).float() if ctx.needs_input_grad[3] else None
        grad_b = (g.T @ h).mul_(ctx.scaling).float() if ctx.needs_input_grad[4] else None
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = g @ weight.T if ctx.fan_in_fan_out else g @ weight
            if mask is None:
                grad_x.addmm_(grad_h, a)
            else:
                grad_x.add_((grad_h @ a).mul_(mask))
            grad_x = grad_x.view(grad_y.shape[:-1] + (grad_x.shape[-1],))
        return grad_x, None, None, grad_a, grad_b, None, None, None
