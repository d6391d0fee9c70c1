"""Save and load adapters in PEFT's on-disk layout, so PEFT and our engine read each other's adapters.

A folder holds
- adapter_config.json: PEFT's LoraConfig fields (peft_type "LORA", task_type, r, lora_alpha, ...),
- adapter_model.safetensors: `base_model.model.<module>.lora_A.weight` / `.lora_B.weight` for each wrapped
  module, and `base_model.model.<module>.<param>` for each fully trained module (modules_to_save),
- label_mapping.json for classification: {"id2label": {"0": name, ...}}.

Loading takes the wrapped modules and the rank from the weights themselves (PEFT configs may name targets by
suffix, regex or "all-linear"), and alpha, dropout and rsLoRA from the config.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from trainer.config import LoraSettings
from trainer.errors import TrainerError
from trainer.inject import inject_lora, lora_modules

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
LABELS_FILE = "label_mapping.json"
PREFIX = "base_model.model."
TASK_TYPES = {"causal-lm": "CAUSAL_LM", "classification": "SEQ_CLS"}
_LORA_SUFFIXES = (".lora_A.weight", ".lora_B.weight")


def adapter_state_dict(model: nn.Module, modules_to_save: list[str]) -> dict[str, torch.Tensor]:
    """The tensors an adapter file holds, under PEFT's key names."""
    tensors = {}
    for name, module in lora_modules(model):
        tensors[f"{PREFIX}{name}.lora_A.weight"] = module.lora_A.weight
        tensors[f"{PREFIX}{name}.lora_B.weight"] = module.lora_B.weight
    for name in modules_to_save:
        for param_name, param in model.get_submodule(name).named_parameters():
            tensors[f"{PREFIX}{name}.{param_name}"] = param
    return tensors


def save_adapter(model: nn.Module, out_dir, *, base_model_name_or_path: str, task: str, settings: LoraSettings,
                 target_modules: list[str], modules_to_save: list[str], label_mapping=None) -> Path:
    """Write the adapter of `model` into `out_dir` (created if needed) in PEFT's layout; returns the folder.

    `label_mapping` is an id2label mapping ({0: "billing", ...}) for classification.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {key: value.detach().cpu().contiguous() for key, value in
               adapter_state_dict(model, modules_to_save).items()}
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    wrapped = dict(lora_modules(model))
    config = {
        "peft_type": "LORA",
        "task_type": TASK_TYPES[task],
        "base_model_name_or_path": base_model_name_or_path,
        "r": settings.rank,
        "lora_alpha": int(settings.alpha) if float(settings.alpha).is_integer() else settings.alpha,
        "lora_dropout": settings.dropout,
        "target_modules": list(target_modules),
        "modules_to_save": list(modules_to_save) or None,
        "fan_in_fan_out": any(wrapped[name].fan_in_fan_out for name in target_modules),
        "use_rslora": settings.rslora,
        "bias": "none",
        "inference_mode": True,
        "init_lora_weights": True,
        "use_dora": False,
        "rank_pattern": {},
        "alpha_pattern": {},
    }
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    if label_mapping is not None:
        id2label = {str(i): label for i, label in dict(label_mapping).items()}
        (out / LABELS_FILE).write_text(json.dumps({"id2label": id2label}, indent=2) + "\n")
    return out


def read_adapter_config(adapter_dir) -> dict:
    path = Path(adapter_dir) / CONFIG_FILE
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise TrainerError(f"{adapter_dir} is not an adapter folder: {CONFIG_FILE} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise TrainerError(f"{path} is not valid JSON: {error}") from None
    if config.get("peft_type") != "LORA":
        raise TrainerError(f"{path}: only LoRA adapters are supported, this one is {config.get('peft_type')!r}")
    unsupported = [key for key in ("use_dora", "rank_pattern", "alpha_pattern", "lora_bias") if config.get(key)]
    if config.get("bias", "none") != "none":
        unsupported.append("bias")
    if unsupported:
        raise TrainerError(f"{path}: adapter uses {', '.join(unsupported)}, which this engine does not support")
    return config


def read_label_mapping(adapter_dir) -> dict[int, str] | None:
    path = Path(adapter_dir) / LABELS_FILE
    if not path.exists():
        return None
    return {int(i): label for i, label in json.loads(path.read_text())["id2label"].items()}


def load_adapter(model: nn.Module, adapter_dir) -> nn.Module:
    """Apply the adapter in `adapter_dir` (ours or PEFT's) to `model` and return it.

    A model that already has the same LoRA layers (resuming training) just gets the weights.
    """
    config = read_adapter_config(adapter_dir)
    path = Path(adapter_dir) / WEIGHTS_FILE
    if not path.exists():
        raise TrainerError(f"{adapter_dir} has no {WEIGHTS_FILE}")
    tensors = {key.removeprefix(PREFIX): value for key, value in load_file(str(path)).items()}
    ranks = {key.removesuffix(".lora_A.weight"): value.shape[0] for key, value in tensors.items()
             if key.endswith(".lora_A.weight")}
    present = dict(lora_modules(model))
    if not present:
        model.requires_grad_(False)
        _check_modules_exist(model, ranks, adapter_dir)
        alpha, rslora = config["lora_alpha"], bool(config.get("use_rslora", False))
        for rank in sorted(set(ranks.values())):
            inject_lora(model, [name for name, r in ranks.items() if r == rank], rank=rank, alpha=alpha,
                        dropout=float(config.get("lora_dropout", 0.0)), rslora=rslora)
    elif set(present) != set(ranks):
        raise TrainerError(f"{adapter_dir} adapts other modules than the LoRA layers this model already has")
    _load_tensors(model, tensors, adapter_dir)
    return model


def _check_modules_exist(model: nn.Module, names, adapter_dir) -> None:
    modules = dict(model.named_modules())
    missing = [name for name in names if name not in modules]
    if missing:
        raise TrainerError(f"{adapter_dir} does not fit this base model: it has no module {missing[0]}")


def _load_tensors(model: nn.Module, tensors: dict[str, torch.Tensor], adapter_dir) -> None:
    # Keys are module paths plus a parameter name; LoRA keys (".lora_A.weight") resolve the same way.
    params = dict(model.named_parameters())
    for key, value in tensors.items():
        param = params.get(key)
        if param is None or param.shape != value.shape:
            found = "missing" if param is None else f"shaped {tuple(param.shape)}"
            raise TrainerError(f"{adapter_dir} does not fit this base model: {key} is {tuple(value.shape)}, "
                               f"the model's is {found}")
        with torch.no_grad():
            param.copy_(value)
    if not any(key.endswith(_LORA_SUFFIXES) for key in tensors):
        raise TrainerError(f"{adapter_dir}/{WEIGHTS_FILE} holds no LoRA weights")
    # PEFT-written modules_to_save are trained in full, like ours: make them trainable again for resuming.
    for key in tensors:
        if not key.endswith(_LORA_SUFFIXES):
            params[key].requires_grad_(True)


def saved_head_width(adapter_dir: str | Path) -> int | None:
    """How many labels a classification adapter's saved head outputs, for adapters without label_mapping.json
    (e.g. PEFT's): the narrowest 2-D weight among its modules_to_save (RoBERTa's head also has a square dense
    layer). Reads tensor shapes only."""
    heads = read_adapter_config(adapter_dir).get("modules_to_save") or []
    with safe_open(str(Path(adapter_dir) / WEIGHTS_FILE), framework="pt") as weights:
        shapes = [weights.get_slice(key).get_shape() for key in weights.keys()
                  if any(key.startswith(f"{PREFIX}{head}.") for head in heads)]
    return min((shape[0] for shape in shapes if len(shape) == 2), default=None)
