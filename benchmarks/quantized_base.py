"""fp32 against quantized (nf4, int8) and bf16 bases on this CPU: memory the model costs and training speed, through
the real engine (`trainer.train`, what `python -m trainer train --quantize ...` runs).

    .venv/bin/python benchmarks/quantized_base.py                       # ~100M Llama, fp32 and nf4, ~10 minutes
    .venv/bin/python benchmarks/quantized_base.py --gradient-checkpointing  # both bases with it on
    .venv/bin/python benchmarks/quantized_base.py --bases fp32,nf4,int8,bf16 --steps 6 --threads 2

The model: a Llama-shaped causal LM of about 100M parameters with a small vocabulary (4096), so the linear
layers that quantization shrinks hold almost all the weights (13 layers, hidden 768, intermediate 2048,
12 heads, untied embeddings: 98M), random init, saved once into a folder in bf16, as hub checkpoints are.
The data: 64 rows of random words, 128 tokens each, batch 4, LoRA rank 8 on the attention projections.

Each base runs `trainer.train` in a fresh process (so one run's memory cannot count in another's):
- model memory: metrics.json's model_memory_bytes, the run's peak resident memory minus its resident memory
  just before the model loaded (trainer.memory): what loading the model, LoRA, the optimizer and the
  activations cost;
- speed: tokens per CPU-second of the process over the steps after the first (the machine this ran on is
  shared, and CPU time is what other processes disturb least), and metrics.json's tokens_per_s (wall time).
It prints each base's figures and its ratios to fp32. Targets (issue 12): nf4 model memory <= 0.45x fp32's, and
nf4 no more than 2x slower.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASES = {"fp32": ("none", "fp32"), "bf16": ("none", "bf16"), "nf4": ("nf4", "fp32"), "int8": ("int8", "fp32")}
LAYERS, HIDDEN, INTERMEDIATE, HEADS, VOCAB = 13, 768, 2048, 12, 4096
ROWS, ROW_TOKENS, BATCH = 64, 128, 4


def build_model(folder: Path, *, layers: int = LAYERS, hidden: int = HIDDEN, intermediate: int = INTERMEDIATE,
                heads: int = HEADS) -> Path:
    """Save the random-init Llama (~100M with the defaults) and a word-level tokenizer with VOCAB entries into
    `folder`, once."""
    if (folder / "config.json").is_file():
        return folder
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = [f"w{i}" for i in range(VOCAB - 3)]
    backend = Tokenizer(models.WordLevel({"<pad>": 0, "<s>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(words)}},
                                         unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>",
                                        eos_token="</s>", unk_token="<pad>")
    config = LlamaConfig(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=heads, vocab_size=VOCAB,
                         max_position_embeddings=512, tie_word_embeddings=False, pad_token_id=0, bos_token_id=1,
                         eos_token_id=2)
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_data(path: Path) -> Path:
    generator = random.Random(0)
    with path.open("w") as out:
        for _ in range(ROWS):
            out.write(json.dumps({"text": " ".join(f"w{generator.randrange(VOCAB - 3)}"
                                                   for _ in range(ROW_TOKENS - 1))}) + "\n")
    return path


def run_one(model: str, data: str, out: str, base: str, steps: int, threads: int, checkpointing: bool) -> dict:
    """In this (fresh) process: train once on `base`; returns the figures."""
    import torch

    from trainer.config import LoraSettings, TrainConfig
    from trainer.reporter import NullReporter
    from trainer.train import train

    class StepClock(NullReporter):
        """Process CPU time at the end of each step."""

        def __init__(self):
            self.cpu = []

        def on_step(self, *args):
            self.cpu.append(time.process_time())

    torch.set_num_threads(threads)
    quantize, dtype = BASES[base]
    config = TrainConfig(model=model, data=data, out=out, quantize=quantize, dtype=dtype, max_steps=steps,
                         batch_size=BATCH, max_length=ROW_TOKENS, eval_fraction=0.0, checkpoint_every=0,
                         device="cpu", lora=LoraSettings(rank=8, alpha=16, targets="attention"),
                         gradient_checkpointing=checkpointing)
    clock = StepClock()
    metrics = train(config, clock)
    timed_tokens = (len(clock.cpu) - 1) * BATCH * ROW_TOKENS  # every row is ROW_TOKENS long
    return {"base": base, "model_memory_mb": metrics["model_memory_bytes"] / 2**20,
            "tokens_per_cpu_s": timed_tokens / (clock.cpu[-1] - clock.cpu[0]),
            "tokens_per_s": metrics["tokens_per_s"], "steps": metrics["steps"], "params": metrics["total_params"]}


def in_subprocess(*args: str) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), TOKENIZERS_PARALLELISM="false")
    done = subprocess.run([sys.executable, __file__, "--worker", *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"the {args[3]} run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bases", default="fp32,nf4", help=f"comma-separated, from {', '.join(BASES)}; the first "
                                                            "is the reference of the ratios (default fp32,nf4)")
    parser.add_argument("--steps", type=int, default=6, help="training steps per base (default 6)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model-dir", help="where the ~100M model is saved (default: a temporary folder)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--worker", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        model, data, out, base, steps, threads, checkpointing = args.worker
        print(json.dumps(run_one(model, data, out, base, int(steps), int(threads), checkpointing == "1")))
        return
    bases = args.bases.split(",")
    unknown = [b for b in bases if b not in BASES]
    if unknown:
        parser.error(f"unknown base {unknown[0]!r}; choose from {', '.join(BASES)}")
    with tempfile.TemporaryDirectory() as scratch:
        model = build_model(Path(args.model_dir or Path(scratch) / "llama-100m"))
        data = write_data(Path(scratch) / "rows.jsonl")
        rows = [in_subprocess(str(model), str(data), str(Path(scratch) / base), base, str(args.steps),
                              str(args.threads), str(int(args.gradient_checkpointing))) for base in bases]
    reference = rows[0]
    print(f"CPU, {args.threads} thread(s); Llama {reference['params'] / 1e6:.0f}M parameters (vocabulary {VOCAB}), "
          f"{args.steps} steps of {BATCH} x {ROW_TOKENS} tokens, LoRA r=8 on attention, gradient checkpointing "
          f"{'on' if args.gradient_checkpointing else 'off'}; model memory = metrics.json's model_memory_bytes")
    print(f"{'base':>6} {'model MB':>9} {'x ' + reference['base']:>8} {'tokens/CPU-s':>13} {'speed x':>8} "
          f"{'tokens/s (wall)':>16}")
    for row in rows:
        print(f"{row['base']:>6} {row['model_memory_mb']:>9.0f} "
              f"{row['model_memory_mb'] / reference['model_memory_mb']:>7.2f}x {row['tokens_per_cpu_s']:>13.0f} "
              f"{row['tokens_per_cpu_s'] / reference['tokens_per_cpu_s']:>7.2f}x {row['tokens_per_s']:>16.0f}")


if __name__ == "__main__":
    main()
