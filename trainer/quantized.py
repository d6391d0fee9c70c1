"""How the frozen base is stored: its dtype, and bitsandbytes quantization (QLoRA's 4-bit NF4, LLM.int8's 8-bit).

    quantize "none"  base linears as nn.Linear in the job's dtype
    quantize "nf4"   bitsandbytes Linear4bit: 4-bit NormalFloat weights in blocks of 64, their absmax scales
                     quantized again (double quantization, ~0.4 bit a weight saved); each matmul dequantizes to
                     the compute dtype (Dettmers et al. 2023, QLoRA)
    quantize "int8"  bitsandbytes Linear8bitLt: int8 rows with a float scale each (Dettmers et al. 2022)

Only the linear layers inside the blocks are quantized; embeddings, norms and output heads (trainer.targets'
HEAD_NAMES: the LM head, a classifier, a pooler) stay in the job's dtype, as in QLoRA. LoRA wraps the quantized linears (trainer.lora's
plain path: bitsandbytes owns the base matmul's autograd), computes in the compute dtype, and keeps its own
weights and optimizer state in float32.

dtype "auto" is fp32 on CPU and MPS (bf16 matmuls are slower there than fp32 for these sizes), bf16 on a CUDA
GPU that supports it, fp16 otherwise. The weights are loaded in that dtype (not fp32 weights under autocast),
which halves the base's memory and lets trainer.lora's fused node run on it.

A merge of a quantized job dequantizes the quantized base (the weights the adapter was trained against) back
to the base checkpoint's own dtype, then folds the adapter in (trainer.merge).
"""
from __future__ import annotations

import torch
from torch import nn

from trainer.errors import ConfigError
from trainer.targets import HEAD_NAMES

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}


def resolve_dtype(setting: str, device: str) -> torch.dtype:
    """The torch dtype a job's `dtype` setting means on `device` (see the module docstring for "auto")."""
    if setting == "auto":
        if device != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if setting not in DTYPES:
        raise ConfigError(f"dtype must be auto, {', '.join(DTYPES)}, not {setting!r}", "dtype")
    return DTYPES[setting]


def import_quantization_library(quantize: str) -> None:
    """Import bitsandbytes and transformers' integration of it for `quantize` ("nf4", "int8"; nothing for "none").
    A run does it before it marks the memory in use before the model: the libraries (0.13 GB of resident memory
    on a CPU) are not the model's."""
    if quantize == "none":
        return
    if quantize not in ("nf4", "int8"):
        raise ConfigError(f"quantize must be none, nf4 or int8, not {quantize!r}", "quantize")
    try:
        import bitsandbytes  # noqa: F401  (transformers would only say "requires bitsandbytes" later)
    except ImportError:
        raise ConfigError(f"quantize={quantize} needs the bitsandbytes package (pip install bitsandbytes)",
                          "quantize") from None
    import transformers.integrations.bitsandbytes  # noqa: F401


def quantization_config(quantize: str, compute_dtype: torch.dtype):
    """transformers' BitsAndBytesConfig for `quantize` ("nf4", "int8"), or None for "none"."""
    if quantize == "none":
        return None
    import_quantization_library(quantize)
    from transformers import BitsAndBytesConfig

    # Output heads stay unquantized: a classifier head is trained in full, and the LM head is never a target.
    skip = sorted(HEAD_NAMES)
    if quantize == "nf4":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=compute_dtype, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)


def quantized_load_kwargs(quantize: str, compute_dtype: torch.dtype, device: str) -> dict:
    """Extra from_pretrained arguments for a quantized base: bitsandbytes quantizes each layer as it is loaded,
    straight onto `device` (a quantized model cannot be moved with .to() afterwards)."""
    config = quantization_config(quantize, compute_dtype)
    return {} if config is None else {"quantization_config": config, "device_map": {"": device}}


def keep_quant_state_fixed(model: nn.Module) -> None:
    """Stop bitsandbytes from repacking 4-bit weights for its CPU inference kernel on the first no-grad eval
    forward. That repacking is permanent and lossy (the block scales are rounded to bf16) and fails on layers
    narrower than a 64-value block, so a run's eval before training would change the base it then trains on."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def is_quantized_linear(module: nn.Module) -> bool:
    """True for bitsandbytes' Linear4bit / Linear8bitLt (False when bitsandbytes is not installed)."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        return False
    return isinstance(module, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt))


def is_quantized(model: nn.Module) -> bool:
    return any(is_quantized_linear(module) for module in model.modules())


def dequantize(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Replace every quantized linear of `model` (loaded by load_model with quantize) by an nn.Linear holding
    its dequantized weight in `dtype`; returns the model, no longer marked as quantized."""
    return model.dequantize(dtype=dtype)


def keep_trainable_in_float32(module: nn.Module) -> None:
    """Make a fully trained module (a classification head on a bf16/fp16 base) hold float32 weights, so AdamW
    updates it in float32 like the LoRA weights, and cast what flows in to float32."""
    if next(module.parameters()).dtype == torch.float32:
        return
    module.float()
    module.register_forward_pre_hook(lambda _, args: tuple(a.float() if torch.is_tensor(a) and a.is_floating_point()
                                                            else a for a in args))
