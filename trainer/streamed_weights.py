"""Loading a base to quantize on the CPU one checkpoint tensor at a time, so its full-precision weights are never
resident together.

transformers reads a safetensors checkpoint through a memory map: every page of the file it has read stays in
the process's resident memory until loading ends, so loading a 4-bit base peaks at the whole bf16/fp32 checkpoint
on top of the packed weights (the file mapped, each tensor cast and quantized in turn). safetensors' "pread"
backend reads each tensor into its own buffer when transformers asks for it, and transformers, quantizing on the
fly, asks for them one after the other (it loads sequentially then), so each buffer is freed once its layer is
quantized. Only a single-file checkpoint (model.safetensors) is read this way; sharded ones load as before.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

WEIGHTS_FILE = "model.safetensors"
CONFIG_KEYS = ("id2label", "label2id", "num_labels")  # load_model's from_pretrained arguments that are config's


class _OpenCheckpoint(dict):
    """Tensor name -> safetensors slice of the open file; transformers deep-copies its arguments, and these are
    handles to one open file, so a copy is the same dict."""

    def __deepcopy__(self, memo):
        return self


@contextmanager
def streamed_checkpoint(folder: Path):
    """The single-file checkpoint in `folder` as lazy slices read with pread, while the context lasts; None
    where `folder` holds no model.safetensors (or a sharded checkpoint)."""
    file = Path(folder) / WEIGHTS_FILE
    if not file.is_file():
        yield None
        return
    from safetensors import safe_open

    with safe_open(str(file), framework="pt", device="cpu", backend="pread") as opened:
        yield _OpenCheckpoint({name: opened.get_slice(name) for name in opened.keys()})


def from_checkpoint(auto_class, folder: Path, checkpoint: dict, kwargs: dict):
    """`auto_class.from_pretrained(folder, **kwargs)`, its weights read from `checkpoint` (streamed_checkpoint's)."""
    from transformers import AutoConfig, GenerationConfig

    config = AutoConfig.from_pretrained(str(folder), **{key: kwargs[key] for key in CONFIG_KEYS if key in kwargs})
    rest = {key: value for key, value in kwargs.items() if key not in CONFIG_KEYS}
    # The auto classes need a folder to resolve; with the weights given, the architecture's own class is called.
    model_class = auto_class._model_mapping[type(config)]
    model = model_class.from_pretrained(None, config=config, state_dict=checkpoint, **rest)
    if model.can_generate() and (Path(folder) / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(str(folder))
    return model
