"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is a folder `checkpoints/step-000050/` holding
  trainable.safetensors  every trainable tensor (LoRA A/B and the classifier head), by parameter name
  state.pt               optimizer, scheduler, RNG states (python, numpy, torch CPU and CUDA), the fp16 GradScaler
                         (its loss scale and growth tracker), data position, history and anything else the trainer
                         passes in `extra`.
It is written to a temporary folder and renamed, so a crash mid-write never leaves a half checkpoint behind.
Only the newest `keep` checkpoints stay.
"""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from trainer.errors import ConfigError

WEIGHTS_FILE = "trainable.safetensors"
STATE_FILE = "state.pt"
PREFIX = "step-"


def rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np
    except ImportError:
        return state
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state["numpy"] = (kind, keys.tolist(), pos, has_gauss, gauss)
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy as np

        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {name: param.detach() for name, param in model.named_parameters() if param.requires_grad}


def save_checkpoint(checkpoints_dir: str | os.PathLike, step: int, model, optimizer, scheduler, *,
                    position: dict, history: list, extra: dict | None = None, keep: int = 2,
                    scaler=None) -> Path:
    """Write checkpoint `step` and drop all but the newest `keep`. Returns its folder.

    `scaler`: the run's torch.amp.GradScaler (fp16 training), or None."""
    root = Path(checkpoints_dir)
    final = root / f"{PREFIX}{step:06d}"
    partial = root / f".{final.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    # safetensors refuses tensors sharing storage; contiguous clones are small (adapter-sized).
    save_file({k: v.contiguous().clone().cpu() for k, v in trainable_state(model).items()},
              str(partial / WEIGHTS_FILE))
    torch.save({"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": rng_state(), "position": position, "history": history, "extra": extra or {},
                "scaler": scaler.state_dict() if scaler is not None else None},
               partial / STATE_FILE)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(checkpoints_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(checkpoints_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith(PREFIX) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def latest_checkpoint(checkpoints_dir: str | os.PathLike) -> Path | None:
    found = list_checkpoints(checkpoints_dir)
    return found[-1] if found else None


def load_checkpoint(folder: str | os.PathLike, model, optimizer, scheduler, scaler=None) -> dict:
    """Restore weights, optimizer, scheduler, RNG (and `scaler`, when given and saved) from `folder`; return
    {step, position, history, extra}."""
    folder = Path(folder)
    weights = load_file(str(folder / WEIGHTS_FILE))
    params = trainable_state(model)
    if set(weights) != set(params):
        raise ConfigError(f"checkpoint {folder.name} was written for different LoRA settings or model "
                          "(its trainable tensors differ); start without --resume or restore those settings",
                          "resume")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(weights[name])
    state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    return {key: state[key] for key in ("step", "position", "history", "extra")}
