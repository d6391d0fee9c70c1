"""Validation throughput and memory on a generated file: rows/s, MB/s and peak RSS.

    python benchmarks/validate_throughput.py [--size-mb 200] [--format chat|prompt_completion|classification]
                                             [--tokenizer MODEL_DIR] [--keep PATH]

Writes a JSONL file of about --size-mb (varied row lengths, a few bad rows), then validates it in a fresh child
process, so the peak RSS is validation's alone: the child reports its RSS after imports (baseline) and its peak
(ru_maxrss) after `validate_file`. Flat memory means the peak stays near the baseline whatever the file size.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORDS = ("the model learns from examples of questions and answers about billing shipping accounts errors "
         "invoices refunds passwords parcels dashboards reports exports").split()


def _sentence(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def _row(rng: random.Random, fmt: str, index: int) -> dict:
    if index % 10_000 == 7:  # a few bad rows so the problem path is exercised too
        return {"prompt": "no completion"} if fmt != "chat" else {"messages": [{"role": "user", "content": "hi"}]}
    if fmt == "chat":
        return {"messages": [{"role": "system", "content": "You are a helpful support agent."},
                             {"role": "user", "content": _sentence(rng, 5, 60)},
                             {"role": "assistant", "content": _sentence(rng, 5, 120)}]}
    if fmt == "classification":
        return {"text": _sentence(rng, 5, 80), "label": rng.choice(["billing", "bug", "account", "shipping"])}
    return {"prompt": _sentence(rng, 5, 60), "completion": _sentence(rng, 5, 120)}


def generate(path: Path, size_mb: float, fmt: str) -> int:
    """Write rows until the file reaches size_mb; returns the row count."""
    rng, rows, written, target = random.Random(0), 0, 0, size_mb * 2**20
    with open(path, "w", encoding="utf-8") as out:
        while written < target:
            line = json.dumps(_row(rng, fmt, rows)) + "\n"
            out.write(line)
            written += len(line)
            rows += 1
    return rows


def child(path: str, tokenizer_dir: str | None) -> None:
    from trainer.data.validate import validate_file

    tokenizer = None
    if tokenizer_dir:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    report = validate_file(path, tokenizer=tokenizer, max_length=512)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "rows": report.rows, "valid_rows": report.valid_rows,
                      "problem_count": report.problem_count, "format": report.format,
                      "baseline_rss_mb": baseline_kb / 1024,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "token_stats": report.token_stats}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=200)
    parser.add_argument("--format", default="chat", choices=["chat", "prompt_completion", "classification"])
    parser.add_argument("--tokenizer", help="a model folder whose tokenizer measures exact token lengths")
    parser.add_argument("--keep", help="write the generated file here and keep it")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.tokenizer)
        return
    with tempfile.TemporaryDirectory() as folder:
        path = Path(args.keep or Path(folder) / "bench.jsonl")
        rows = generate(path, args.size_mb, args.format)
        size_mb = path.stat().st_size / 2**20
        command = [sys.executable, __file__, "--child", str(path)] + (["--tokenizer", args.tokenizer]
                                                                       if args.tokenizer else [])
        result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True,
                                           env={**os.environ, "HF_HUB_OFFLINE": "1"}).stdout)
    seconds = result["seconds"]
    print(f"file: {size_mb:.1f} MB, {rows} rows, format {result['format']}, "
          f"tokenizer: {args.tokenizer or 'none (byte estimate)'}")
    print(f"validated in {seconds:.1f} s: {rows / seconds:,.0f} rows/s, {size_mb / seconds:.1f} MB/s; "
          f"{result['valid_rows']} valid, {result['problem_count']} problems")
    print(f"RSS: {result['baseline_rss_mb']:.0f} MB after imports, peak {result['peak_rss_mb']:.0f} MB "
          f"(+{result['peak_rss_mb'] - result['baseline_rss_mb']:.0f} MB for validation)")


if __name__ == "__main__":
    main()
