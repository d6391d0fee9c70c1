"""Merged export: fold an adapter into its base model and write a plain Hugging Face model folder.

The folder (safetensors weights, config, tokenizer with its chat template, generation config for generators)
loads with `transformers` alone. Its tokenizer is the one saved with the adapter when there is one (a run on
chat data gives it the chat template it trained with), else the base model's. The base is loaded in the dtype its checkpoint is stored in and each update
s·B@A is added in float32 and rounded once (trainer.lora), so a bf16 model stays bf16 without extra error.
A classification adapter's label names (label_mapping.json) become the merged config's id2label.

An adapter trained on a quantized base (quantize "nf4" / "int8") learned against the quantized weights, not the
original ones: its merge loads the base quantized as in training, dequantizes it back to the checkpoint's dtype
(trainer.quantized.dequantize) and merges into that, so the merged model computes what training's model did.
"""
from __future__ import annotations

from pathlib import Path

from trainer.adapter_io import load_adapter, read_adapter_config, read_label_mapping, saved_head_width
from trainer.inject import merge_and_unload

TASK_FOR_TYPE = {"CAUSAL_LM": "causal-lm", "SEQ_CLS": "classification"}


def merge_to_folder(model_path_or_id: str, adapter_dir, out_dir, quantize: str = "none") -> Path:
    """Write base `model_path_or_id` + the adapter in `adapter_dir`, merged, into `out_dir`; returns it.
    `quantize`: how the base was stored when the adapter was trained (see the module docstring)."""
    from trainer.inference import adapter_tokenizer
    from trainer.inspect_model import checkpoint_dtype
    from trainer.models import load_model, resolve_model_path, torch_dtype

    config = read_adapter_config(adapter_dir)
    task = TASK_FOR_TYPE.get(config.get("task_type"), "causal-lm")
    id2label = read_label_mapping(adapter_dir)
    num_labels = saved_head_width(adapter_dir) if task == "classification" and id2label is None else None
    base_folder = resolve_model_path(model_path_or_id)
    dtype = checkpoint_dtype(base_folder, None)
    model, tokenizer = load_model(model_path_or_id, task, id2label=id2label, num_labels=num_labels, dtype=dtype,
                                  quantize=quantize)
    if quantize != "none":
        from trainer.quantized import dequantize

        model = dequantize(model, torch_dtype(dtype))
    tokenizer = adapter_tokenizer(adapter_dir) or tokenizer
    merge_and_unload(load_adapter(model, adapter_dir))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
