"""Which linear layers get a LoRA adapter: presets per architecture, name suffixes, or a regex.

The matching itself (`match_targets`) is pure Python over module names, so `trainer.estimate` can answer
"what would this spec train?" from recorded layer names without torch. Only `resolve_targets`, which
lists a live model's linear layers, imports torch (lazily).

A spec is one of
- a preset: "attention", "attention+mlp" or "all-linear" (an unknown architecture gets "all-linear"),
- comma-separated module-name suffixes, "q_proj,v_proj" (a suffix matches whole dotted components),
- "re:<regex>", full-matched against each full module name (at most MAX_TARGET_REGEX_LENGTH characters, and no
  nested repetition: trainer.config.check_target_spec).
Output heads (lm_head, a classifier, a pooler...) are never targets: they are trained in full or not at all.
"""
from __future__ import annotations

import re

from trainer.config import check_target_spec
from trainer.errors import ConfigError, TargetError

_LLAMA = {"attention": ["q_proj", "k_proj", "v_proj", "o_proj"], "mlp": ["gate_proj", "up_proj", "down_proj"]}
_BERT = {"attention": ["query", "key", "value", "attention.output.dense"],
         "mlp": ["intermediate.dense", "output.dense"]}
ARCHITECTURE_TARGETS = {
    **dict.fromkeys(["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text"], _LLAMA),
    "phi3": {"attention": ["qkv_proj", "o_proj"], "mlp": ["gate_up_proj", "down_proj"]},  # fused projections
    "gpt2": {"attention": ["c_attn", "attn.c_proj"], "mlp": ["c_fc", "mlp.c_proj"]},
    "gpt_neox": {"attention": ["query_key_value", "attention.dense"], "mlp": ["dense_h_to_4h", "dense_4h_to_h"]},
    **dict.fromkeys(["bert", "roberta", "xlm-roberta"], _BERT),
    "deberta-v2": {"attention": ["query_proj", "key_proj", "value_proj", "attention.output.dense"],
                   "mlp": _BERT["mlp"]},
}
# A module under any of these names is an output head, never a LoRA target.
HEAD_NAMES = frozenset({"lm_head", "embed_out", "classifier", "score", "pooler", "qa_outputs", "cls"})
PRESETS = ("attention", "attention+mlp", "all-linear")
# The top-level modules a sequence-classification model gets fresh from transformers (PEFT's SEQ_CLS
# modules_to_save: "classifier", "score"), trained in full. DeBERTa's `pooler` too: it sits next to the backbone,
# not in it, so pretrained DeBERTa checkpoints lack it and it starts random like the classifier (BERT's pooler
# is `bert.pooler`, inside the backbone and pretrained).
CLASSIFIER_HEADS = ("classifier", "score", "pooler")


def is_head(name: str) -> bool:
    return any(part in HEAD_NAMES for part in name.split("."))


def preset_suffixes(model_type: str | None, preset: str) -> list[str] | None:
    """The suffixes a preset means for this architecture; None means every linear layer."""
    table = ARCHITECTURE_TARGETS.get(model_type or "")
    if table is None or preset == "all-linear":
        return None
    return table["attention"] + (table["mlp"] if preset == "attention+mlp" else [])


def has_suffix(name: str, suffix: str) -> bool:
    return name == suffix or name.endswith("." + suffix)


def match_targets(linear_names: list[str], model_type: str | None, spec: str) -> list[str]:
    """The names among `linear_names` (full dotted module names) that `spec` selects, in their order.

    Raises TargetError when nothing (or a listed suffix) matches, naming the linear layers there are, or when a
    regex is broken, too long or too slow to match (checked here so that no caller can skip it: the web process
    matches specs taken straight from a query string).
    """
    candidates = [name for name in linear_names if not is_head(name)]
    spec = spec.strip()
    try:
        check_target_spec(spec)
    except ConfigError as error:
        raise TargetError(str(error)) from None
    if spec.startswith("re:"):
        chosen = _match_regex(candidates, spec[3:])
    elif spec in PRESETS:
        suffixes = preset_suffixes(model_type, spec)
        chosen = candidates if suffixes is None else _match_suffixes(candidates, suffixes)
    else:
        suffixes = [part.strip() for part in spec.split(",") if part.strip()]
        missing = [s for s in suffixes if not any(has_suffix(name, s) for name in candidates)]
        if missing:
            raise TargetError(f"target {', '.join(missing)} matched no linear layer; " + _available(candidates))
        chosen = _match_suffixes(candidates, suffixes)
    if not chosen:
        raise TargetError(f"targets {spec!r} matched no linear layer; " + _available(candidates))
    return chosen


def _match_suffixes(names: list[str], suffixes: list[str]) -> list[str]:
    return [name for name in names if any(has_suffix(name, s) for s in suffixes)]


def _match_regex(names: list[str], pattern: str) -> list[str]:
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise TargetError(f"target regex {pattern!r} is not a valid regular expression: {error}") from None
    return [name for name in names if compiled.fullmatch(name)]


def _available(names: list[str]) -> str:
    # Layer names repeat per block; show each distinct name once with block numbers collapsed.
    distinct = list(dict.fromkeys(re.sub(r"\.\d+\.", ".N.", name) for name in names))
    return "linear layers available: " + (", ".join(distinct) if distinct else "none")


def linear_layer_names(model) -> list[str]:
    """Full names of the model's nn.Linear / Conv1D modules, output heads excluded."""
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return [name for name, module in model.named_modules()
            if isinstance(module, (nn.Linear, Conv1D)) and module is not head and not is_head(name)]


def resolve_targets(model, spec: str) -> list[str]:
    """Full names of the modules of `model` that LoRA wraps for `spec` (see module docstring)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return match_targets(linear_layer_names(model), model_type, spec)
