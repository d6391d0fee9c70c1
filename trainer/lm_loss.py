r"""Causal-LM loss straight from the last hidden states: only at positions that have a label, a chunk at a time.

The textbook step computes logits for every position, (B, T, V) floats, keeps them for backward, then
log-softmaxes and gathers them. For a 32k vocabulary that tensor (and its gradient) is the largest thing in
a LoRA step, and most of it is waste: prompt tokens, padding and the last position have no label.

Here the output layer is frozen (LoRA never targets it), so its only gradient is the one to the hidden
states, and that can be formed right away, chunk by chunk:

    h (K, H) = hidden states of the K positions whose next token is a label
    z_c      = h_c Wᵀ (+ b)          one chunk of rows at a time, (C, V) in float32
    logits_c = z_c, or c·tanh(z_c / c) for Gemma 2/3's final logit soft-capping (c = final_logit_softcapping)
    loss    += Σ logsumexp(logits_c) - logits_c[target]
    dL/dh_c  = ((softmax(logits_c) - onehot(target)) ⊙ dlogits_c/dz_c) W,   dlogits/dz = 1 - tanh²(z/c)

so forward keeps only dL/dh (K, H) for backward, never a (B, T, V) tensor. The sum is the same one
`trainer.evaluate.loss_sum` computes from full logits; tests check them against each other for every
architecture we test (tests/trainer/test_architectures.py). Other heads (Cohere's logit scale, Granite's
scaling, a trainable head) are not reproduced here: those models take the full-logits path.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainer.data.render import IGNORE_INDEX

CHUNK_VALUES = 1 << 23  # logits in flight at once: 32 MiB of float32 (256 rows of a 32k vocabulary)
# Architectures whose logits are exactly `output_layer(base_model(...).last_hidden_state)`: no soft-capping,
# logit scaling or other post-processing in their *ForCausalLM.forward (Cohere, Granite have some).
PLAIN_HEAD_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "gpt2", "gpt_neox", "phi3", "smollm3",
                              "gemma"})
# Architectures whose *ForCausalLM soft-caps the head's output when config.final_logit_softcapping is set.
SOFTCAPPED_HEAD_TYPES = frozenset({"gemma2", "gemma3_text"})
HIDDEN_STATE_LOSS_TYPES = PLAIN_HEAD_TYPES | SOFTCAPPED_HEAD_TYPES


def supports_hidden_state_loss(model) -> bool:
    """True when `lm_loss_sum` may stand in for the full-logits loss of `model`."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return (getattr(model.config, "model_type", None) in HIDDEN_STATE_LOSS_TYPES
            and isinstance(head, nn.Linear)
            and not head.weight.requires_grad
            and (head.bias is None or not head.bias.requires_grad)
            and model.base_model is not model)


def lm_loss_sum(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy over the labels that are not IGNORE_INDEX (labels shifted by one)."""
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    head = model.get_output_embeddings()
    return _LinearCrossEntropy.apply(hidden[:, :-1][keep], head.weight, head.bias, targets[keep],
                                     final_softcap(model))


def final_softcap(model) -> float | None:
    """The c of logits = c·tanh(z / c) that `model` applies after its output layer, or None."""
    if model.config.model_type not in SOFTCAPPED_HEAD_TYPES:
        return None
    return getattr(model.config, "final_logit_softcapping", None)


class _LinearCrossEntropy(torch.autograd.Function):
    """Σ cross_entropy(cap(h Wᵀ + b), targets) with a frozen W, b; h (K, H), targets (K,); cap is the identity,
    or c·tanh(z / c) when `softcap` c is given. Returns a float32 scalar."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, softcap):
        need_grad = ctx.needs_input_grad[0]
        grad_hidden = torch.empty_like(hidden) if need_grad else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        chunk = max(1, CHUNK_VALUES // weight.shape[0])
        for start in range(0, hidden.shape[0], chunk):
            rows = slice(start, start + chunk)
            logits = F.linear(hidden[rows], weight, bias).float()
            if softcap:
                capped = torch.tanh(logits / softcap)
                logits = capped * softcap
            target = targets[rows]
            log_probs = torch.log_softmax(logits, dim=-1)
            total -= log_probs.gather(1, target[:, None]).sum()
            if need_grad:
                probs = log_probs.exp_()
                probs[torch.arange(target.shape[0], device=target.device), target] -= 1
                if softcap:
                    probs.mul_(1 - capped.square_())
                grad_hidden[rows] = probs.to(weight.dtype) @ weight
        ctx.save_for_backward(grad_hidden)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        (grad_hidden,) = ctx.saved_tensors
        return grad_hidden * grad_total.to(grad_hidden.dtype), None, None, None, None
