"""Describing a base model without loading its weights: architecture, linear layers with shapes, sizes.

The model is built from its config on the meta device (shapes only, no memory, no weight file read), the same
class `trainer.models.load_model` would load for the task, so parameter counts equal a real load's (tied
weights counted once). The weights' dtype and on-disk size come from the safetensors headers (a few KB read).
The web app records this once per base model and computes LoRA sizes and memory estimates from it.
"""
from __future__ import annotations

import json
import struct
from collections import Counter
from pathlib import Path

from trainer.config import TASKS
from trainer.errors import ConfigError
from trainer.models import BUILTIN_MODELS, check_task, resolve_model_path
from trainer.targets import is_head

GENERATOR_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")
SAFETENSORS_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}


def supported_tasks(config) -> list[str]:
    """The tasks transformers has a head for, for this config's model_type. Encoders (masked-LM architectures
    such as BERT) count as generators only when configured as decoders."""
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
                                                        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES)

    encoder = config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False)
    generator = config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not encoder
    classifier = config.model_type in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES
    return [task for task, ok in zip(TASKS, (generator, classifier)) if ok]


def default_task(config) -> str:
    """The task a checkpoint was saved for: causal-lm for generators (...ForCausalLM, ...LMHeadModel), else
    classification when transformers has that head (encoders saved bare, like MiniLM's BertModel)."""
    tasks = supported_tasks(config)
    architectures = config.architectures or []
    if any(a.endswith(GENERATOR_SUFFIXES) for a in architectures) and "causal-lm" in tasks:
        return "causal-lm"
    return "classification" if "classification" in tasks else "causal-lm"


def meta_model(config, task: str, num_labels: int | None = None):
    """The task's model class built on the meta device: right shapes, no storage."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if task == "classification" and num_labels is not None:
        config.num_labels = num_labels
    auto = AutoModelForSequenceClassification if task == "classification" else AutoModelForCausalLM
    with torch.device("meta"):
        return auto.from_config(config)


def linear_layers(model) -> list[dict]:
    """Every nn.Linear and GPT-2 Conv1D (weight stored (in, out)), with `head` marking output heads."""
    import torch
    from transformers.pytorch_utils import Conv1D

    output_embeddings = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    layers = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            shape = (module.in_features, module.out_features)
        elif isinstance(module, Conv1D):
            shape = tuple(module.weight.shape)
        else:
            continue
        layers.append({"name": name, "in_features": shape[0], "out_features": shape[1],
                       "head": module is output_embeddings or is_head(name)})
    return layers


def memory_shape(model, text_config) -> dict:
    """What trainer.estimate needs beyond the layer list to size activations: heads, the MLP's width, whether
    training keeps attention probabilities (attention dropout, or an architecture without fused attention) and
    whether the causal-LM loss is computed from the hidden states (trainer.lm_loss)."""
    from trainer.lm_loss import HIDDEN_STATE_LOSS_TYPES

    dropout = max((float(getattr(text_config, name, 0) or 0)
                   for name in ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop")), default=0.0)
    return {
        "num_heads": getattr(text_config, "num_attention_heads", None),
        "intermediate_size": getattr(text_config, "intermediate_size", None) or getattr(text_config, "n_inner", None),
        "attention_dropout": dropout,
        "attention": "sdpa" if getattr(model, "_supports_sdpa", False) else "eager",
        "hidden_state_loss": model.config.model_type in HIDDEN_STATE_LOSS_TYPES,
    }


def safetensors_header(path: Path) -> dict:
    """The tensor table at the start of a .safetensors file: {name: {dtype, shape, data_offsets}}."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    header.pop("__metadata__", None)
    return header


def checkpoint_dtype(folder: Path, config) -> str:
    """The dtype most weight bytes are stored in, from the safetensors headers; else the config's, else float32."""
    weight_bytes: Counter[str] = Counter()
    for path in folder.glob("*.safetensors"):
        for tensor in safetensors_header(path).values():
            start, end = tensor["data_offsets"]
            weight_bytes[SAFETENSORS_DTYPES.get(tensor["dtype"], tensor["dtype"].lower())] += end - start
    if weight_bytes:
        return weight_bytes.most_common(1)[0][0]
    configured = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    return str(configured).removeprefix("torch.") if configured else "float32"


def has_chat_template(folder: Path) -> bool:
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    tokenizer_config = folder / "tokenizer_config.json"
    return tokenizer_config.is_file() and bool(json.loads(tokenizer_config.read_text()).get("chat_template"))


def inspect(name: str, task: str | None = None, num_labels: int | None = None) -> dict:
    """A JSON-able description of model `name` as `load_model(name, task)` would load it.

    `task` None picks causal-lm for generators, classification for encoders; a classification head has
    `num_labels` outputs (None: as many as the folder's config says, 2 unless set).
    """
    from transformers import AutoConfig

    if task is not None:
        check_task(task)
    folder = resolve_model_path(name)
    config = AutoConfig.from_pretrained(str(folder))
    tasks = supported_tasks(config)
    task = task or default_task(config)
    if task not in tasks:
        raise ConfigError(f"model {name!r} ({config.model_type}) cannot be used for {task}; it supports: "
                          f"{', '.join(tasks) or 'nothing Loraworks trains'}", "task")
    model = meta_model(config, task, num_labels)
    text_config = model.config.get_text_config()
    total = sum(p.numel() for p in model.parameters())
    dtype = checkpoint_dtype(folder, config)
    return {
        "name": name,
        "path": str(folder),
        "demo": name in BUILTIN_MODELS or bool(getattr(config, "loraworks_demo", False)),
        "architecture": type(model).__name__,
        "model_type": config.model_type,
        "task": task,
        "tasks": tasks,
        "num_labels": model.config.num_labels if task == "classification" else None,
        "total_params": total,
        "dtype": dtype,
        "size_bytes": total * DTYPE_BYTES.get(dtype, 4),
        "file_bytes": sum(p.stat().st_size for p in folder.glob("*.safetensors")),
        "has_chat_template": has_chat_template(folder),
        "hidden_size": getattr(text_config, "hidden_size", None),
        "num_layers": getattr(text_config, "num_hidden_layers", None),
        "vocab_size": getattr(text_config, "vocab_size", None),
        "max_positions": getattr(text_config, "max_position_embeddings", None),
        **memory_shape(model, text_config),
        "linear_layers": linear_layers(model),
    }
