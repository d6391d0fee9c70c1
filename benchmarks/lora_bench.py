"""What benchmarks/engine_vs_peft.py and its --e2e mode (engine_vs_peft_e2e.py) share: the three LoRA
implementations compared and their settings, the tiny Llama, the textbook LoRA, and the helpers that run a
measurement in a fresh process, read its peak RSS and print the table.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMPLS = ("engine", "peft", "torch")
RANK, ALPHA, DROPOUT, TARGETS = 8, 16, 0.05, "attention"


def rss_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def build_llama(hidden: int = 256, layers: int = 4, intermediate: int = 688, heads: int = 8, kv_heads: int = 4,
                vocab: int = 4096, batch: tuple[int, int] = (8, 64), tied: bool = False):
    """A randomly initialised Llama causal LM and one batch of random tokens (`batch` = sequences x tokens)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=vocab,
                         max_position_embeddings=max(256, batch[1]), tie_word_embeddings=tied)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    ids = torch.randint(0, config.vocab_size, batch, generator=torch.Generator().manual_seed(1))
    return model, "causal-lm", {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def textbook_lora(model, names):
    """LoRA the plain way: base(x) + B(A(dropout(x))) * alpha/r, one nn.Module per wrapped layer."""
    import math

    from torch import nn

    class PlainLora(nn.Module):
        def __init__(self, base):
            super().__init__()
            self.base = base
            self.A = nn.Linear(base.in_features, RANK, bias=False)
            self.B = nn.Linear(RANK, base.out_features, bias=False)
            nn.init.kaiming_uniform_(self.A.weight, a=math.sqrt(5))
            nn.init.zeros_(self.B.weight)
            self.dropout = nn.Dropout(DROPOUT)

        def forward(self, x):
            return self.base(x) + self.B(self.A(self.dropout(x))) * (ALPHA / RANK)

    model.requires_grad_(False)
    for name in names:
        parent, _, child = name.rpartition(".")
        module = model.get_submodule(parent)
        setattr(module, child, PlainLora(getattr(module, child)))
    if hasattr(model, "classifier"):
        model.classifier.requires_grad_(True)
    return model


def in_subprocess(script: str, *worker_args: str) -> dict | list:
    """Run `script --worker *worker_args` in a fresh process; its last line of output, as JSON."""
    command = [sys.executable, script, "--worker", *worker_args]
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def format_table(header: list[str], lines: list[list[str]], markdown: bool) -> str:
    if markdown:
        rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(rows + ["| " + " | ".join(line) + " |" for line in lines])
    widths = [max(len(x) for x in column) for column in zip(header, *lines)]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in [header] + lines)
