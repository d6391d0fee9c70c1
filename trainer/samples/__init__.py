"""Sample datasets written by code in this package (nothing copied): try Loraworks without bringing data.

- "support-tickets": support-ticket routing, classification JSONL {text, label}, 600 rows, 5 labels
  (account, billing, feature_request, shipping, technical). See `support_tickets`.
- "instructions": instruction following, alpaca JSONL {instruction, input, output}, 400 rows whose answers are
  computed (arithmetic, conversions, sorting, word tasks). See `instructions`.
- "preferences": questions about Python with a friendly (chosen) and a curt (rejected) answer, preference JSONL
  {prompt, chosen, rejected}, 240 rows, for DPO jobs. See `preferences`.

All are deterministic: the same seed writes byte-identical files. `sample_path(name)` writes a sample once into a
cache folder (LORAWORKS_SAMPLES_DIR, default ~/.cache/loraworks/samples) and returns its path;
`python -m trainer.samples OUTDIR` writes them all into OUTDIR.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from trainer.samples import instructions, preferences, support_tickets


@dataclass(frozen=True)
class Sample:
    name: str
    filename: str
    task: str
    format: str
    description: str
    rows: Callable[[int], list[dict]]


SAMPLES = {
    "support-tickets": Sample("support-tickets", "support_tickets.jsonl", "classification", "classification",
                              "Route customer support tickets to one of 5 teams", support_tickets.rows),
    "instructions": Sample("instructions", "instructions.jsonl", "causal-lm", "alpaca",
                           "Short instructions with computed answers (arithmetic, conversions, word tasks)",
                           instructions.rows),
    "preferences": Sample("preferences", "preferences.jsonl", "causal-lm", "preference",
                          "Python questions with a friendly (chosen) and a curt (rejected) answer, for DPO",
                          preferences.rows),
}
DEFAULT_SEED = 0


def samples_dir() -> Path:
    return Path(os.environ.get("LORAWORKS_SAMPLES_DIR", Path.home() / ".cache" / "loraworks" / "samples"))


def write_sample(name: str, folder: str | Path, seed: int = DEFAULT_SEED) -> Path:
    """Write sample `name` as JSONL into `folder` (atomically: a reader never sees half a file)."""
    sample = SAMPLES[name]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / sample.filename
    partial = path.with_suffix(f".partial-{os.getpid()}")
    with open(partial, "w", encoding="utf-8") as out:
        for row in sample.rows(seed):
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    partial.replace(path)
    return path


def sample_path(name: str, folder: str | Path | None = None) -> Path:
    """The path of sample `name`, written on first use into `folder` (default: samples_dir())."""
    if name not in SAMPLES:
        raise KeyError(f"unknown sample {name!r}; samples: {', '.join(SAMPLES)}")
    path = Path(folder or samples_dir()) / SAMPLES[name].filename
    return path if path.is_file() else write_sample(name, path.parent)
