"""Data-parallel training on this CPU: 1 process with 2 threads against 2 processes (gloo) with 1 thread each, the
same job through the real command line (`python -m trainer train`, `--processes 2`).

    .venv/bin/python benchmarks/data_parallel.py                 # ~5M Llama, 12 steps, 2 rounds
    .venv/bin/python benchmarks/data_parallel.py --steps 24 --rounds 3 --layers 4 --hidden 384

The model: a random-init Llama (4 layers, hidden 256, intermediate 688, 8 heads, vocabulary 4096: ~5M parameters;
benchmarks/quantized_base.py builds it), LoRA rank 8 on the attention projections. The data: 64 rows of random
words, 128 tokens each. Both runs train on global batches of 8 rows: one process on batch 8 with
OMP_NUM_THREADS=2, or two processes on batch 4 each with OMP_NUM_THREADS=1, so they do the same work and reach the
same adapter (the script prints the largest difference between the two adapters of a round).

Speed: metrics.json's tokens_per_s (the tokens of every process over the training loop's wall time, rank 0's
clock; model loading and the processes' start are left out), and the whole command's wall time. The rounds
alternate the two set-ups so both see the same machine load; the median of each is reported.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from quantized_base import build_model, write_data

ROOT = Path(__file__).resolve().parents[1]
SETUPS = {"1 process x 2 threads": {"processes": 1, "threads": 2, "batch": 8},
          "2 processes x 1 thread": {"processes": 2, "threads": 1, "batch": 4}}


def run(setup: dict, model: Path, data: Path, out: Path, steps: int) -> dict:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "trainer", "train", "--model", str(model), "--data", str(data), "--out", str(out),
         "--batch-size", str(setup["batch"]), "--max-steps", str(steps), "--rank", "8", "--dropout", "0",
         "--eval-fraction", "0", "--max-length", "128", "--processes", str(setup["processes"])],
        cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": str(setup["threads"]), "HF_HUB_OFFLINE": "1"},
        capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{done.args} failed:\n{done.stderr[-3000:]}")
    metrics = json.loads(done.stdout)
    return {"tokens_per_s": metrics["tokens_per_s"], "wall_s": time.perf_counter() - started,
            "steps": metrics["steps"], "processes": metrics["processes"]}


def adapter_difference(first: Path, second: Path) -> float:
    from safetensors.torch import load_file

    a = load_file(str(first / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(second / "adapter" / "adapter_model.safetensors"))
    return max(float((a[key] - b[key]).abs().max()) for key in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="data-parallel-") as scratch:
        scratch = Path(scratch)
        model = build_model(scratch / "llama", layers=args.layers, hidden=args.hidden,
                            intermediate=args.hidden * 43 // 16, heads=8)
        data = write_data(scratch / "rows.jsonl")
        results = {name: [] for name in SETUPS}
        for round_ in range(args.rounds):
            order = list(SETUPS) if round_ % 2 == 0 else list(reversed(SETUPS))
            for name in order:
                results[name].append(run(SETUPS[name], model, data, scratch / f"{round_}-{name[0]}", args.steps))
            difference = adapter_difference(scratch / f"{round_}-1", scratch / f"{round_}-2")
            print(f"round {round_ + 1}: largest adapter difference between the set-ups {difference:.2e}",
                  flush=True)
    base = statistics.median(r["tokens_per_s"] for r in results["1 process x 2 threads"])
    print(f"{args.steps} steps of 8 x 128 tokens, {args.rounds} rounds (medians):")
    for name, runs in results.items():
        speed = statistics.median(r["tokens_per_s"] for r in runs)
        wall = statistics.median(r["wall_s"] for r in runs)
        print(f"  {name:24s} {speed:8,.0f} tokens/s ({speed / base:.2f}x)   command {wall:5.1f} s wall")


if __name__ == "__main__":
    main()
