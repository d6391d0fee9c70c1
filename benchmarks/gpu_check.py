"""GPU check: a Qwen2-shaped ~0.5B model trained 30 steps with our LoRA engine and with PEFT, on a bf16 and on an
NF4 (4-bit, QLoRA) base; prints tokens/s and peak GPU memory side by side. Not part of CI.

    .venv/bin/python benchmarks/gpu_check.py                 # on a CUDA machine: ~0.5B, 30 steps, 4 fresh processes
    .venv/bin/python benchmarks/gpu_check.py --smoke         # anywhere: a tiny Qwen2 on CPU, 2 steps (checks the script)

The model: Qwen2.5-0.5B's shape (24 layers, hidden 896, intermediate 4864, 14 heads / 2 key-value heads,
vocabulary 151936, tied embeddings: 494M parameters), random init, saved once in bf16 as hub checkpoints are, and
loaded by trainer.models.load_model for both implementations (bf16 weights, or NF4 with double quantization and
bf16 compute through bitsandbytes). LoRA r=16, alpha 32, dropout 0.05 on every linear of the blocks; batch
8 x 512 random tokens, each a label; AdamW (fp32 LoRA weights and state) at lr 1e-4.
- ours: trainer.inject.apply_lora and the engine's loss (trainer.evaluate.batch_loss_sum: from hidden states);
- peft: peft.get_peft_model on the same modules and transformers' own loss (model(**batch).loss).
Each (base, implementation) runs in a fresh process. tokens/s: the steps after 3 warm-up steps, synchronised;
peak memory: torch.cuda.max_memory_allocated over the whole process (the model, LoRA, optimizer, activations).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASES = ("bf16", "nf4")
IMPLS = ("ours", "peft")
RANK, ALPHA, DROPOUT, TARGETS = 16, 32, 0.05, "all-linear"
WARMUP_STEPS = 3
FULL = {"shape": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                      num_key_value_heads=2, vocab_size=151936), "batch": (8, 512), "steps": 30, "device": "cuda"}
SMOKE = {"shape": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=512), "batch": (2, 32), "steps": 2, "device": "cpu"}


def build_model(folder: Path, shape: dict) -> int:
    """Save a random-init Qwen2 causal LM of `shape` in bf16 (no tokenizer: batches are random ids) into `folder`;
    returns its parameter count."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(**shape, tie_word_embeddings=True, max_position_embeddings=4096, pad_token_id=0)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    model.to(torch.bfloat16).save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def load(folder: str, base: str, device: str):
    """The base as the engine loads it: bf16 weights, or NF4 (double quantization) computing in bf16."""
    import torch
    from transformers import AutoModelForCausalLM

    from trainer.quantized import keep_quant_state_fixed, quantized_load_kwargs

    quantize = "nf4" if base == "nf4" else "none"
    kwargs = quantized_load_kwargs(quantize, torch.bfloat16, device)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16, **kwargs)
    if quantize == "none":
        model.to(device)
    keep_quant_state_fixed(model)
    return model


def with_lora(model, impl: str):
    from trainer.config import LoraSettings
    from trainer.inject import apply_lora
    from trainer.targets import resolve_targets

    if impl == "ours":
        apply_lora(model, LoraSettings(rank=RANK, alpha=ALPHA, dropout=DROPOUT, targets=TARGETS), "causal-lm")
        return model.train()
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(task_type="CAUSAL_LM", r=RANK, lora_alpha=ALPHA, lora_dropout=DROPOUT,
                        target_modules=resolve_targets(model, TARGETS))
    return get_peft_model(model, config).train()


def run_one(folder: str, base: str, impl: str, steps: int, batch_shape: tuple[int, int], device: str) -> dict:
    """In this fresh process: load, wrap, train `steps` steps; tokens/s after warm-up and peak memory."""
    import torch

    from trainer.evaluate import batch_loss_sum, target_count

    model = with_lora(load(folder, base, device), impl)
    ids = torch.randint(1, model.config.vocab_size, batch_shape, generator=torch.Generator().manual_seed(1)).to(device)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    targets = target_count(batch, "causal-lm")
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    started, losses = None, []
    for step in range(steps):
        if step == min(WARMUP_STEPS, steps - 1):
            sync()
            started, timed = time.perf_counter(), steps - step
        loss = batch_loss_sum(model, batch, "causal-lm", device) / targets if impl == "ours" else model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    sync()
    elapsed = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    return {"base": base, "impl": impl, "tokens_per_s": timed * ids.numel() / elapsed, "peak_bytes": peak,
            "first_loss": losses[0], "last_loss": losses[-1], "device": device}


def in_subprocess(*args: str) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, __file__, "--worker", *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{args[1]} / {args[2]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_table(rows: list[dict]) -> None:
    print(f"{'base':>5} {'impl':>5} {'tokens/s':>10} {'vs PEFT':>8} {'peak GiB':>9} {'vs PEFT':>8} {'loss':>14}")
    for row in rows:
        peft = next(r for r in rows if r["base"] == row["base"] and r["impl"] == "peft")
        peak = f"{row['peak_bytes'] / 2**30:9.2f}" if row["peak_bytes"] else f"{'-':>9}"
        peak_ratio = f"{row['peak_bytes'] / peft['peak_bytes']:7.2f}x" if row["peak_bytes"] else f"{'-':>8}"
        print(f"{row['base']:>5} {row['impl']:>5} {row['tokens_per_s']:>10.0f} "
              f"{row['tokens_per_s'] / peft['tokens_per_s']:>7.2f}x {peak} {peak_ratio} "
              f"{row['first_loss']:6.3f}->{row['last_loss']:6.3f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny Qwen2 on CPU for 2 steps: checks the script")
    parser.add_argument("--steps", type=int, help="training steps per run (default 30; 2 with --smoke)")
    parser.add_argument("--bases", default=",".join(BASES), help="comma-separated from bf16, nf4")
    parser.add_argument("--worker", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        folder, base, impl, steps, rows, tokens, device = args.worker
        print(json.dumps(run_one(folder, base, impl, int(steps), (int(rows), int(tokens)), device)))
        return
    plan = SMOKE if args.smoke else FULL
    bases = args.bases.split(",")
    if any(base not in BASES for base in bases):
        parser.error(f"--bases takes {', '.join(BASES)}")
    if plan["device"] == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("no CUDA device here: run it on a GPU machine, or --smoke to check the script on CPU")
    steps = args.steps or plan["steps"]
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "qwen2"
        params = build_model(folder, plan["shape"])
        rows = [in_subprocess(str(folder), base, impl, str(steps), *map(str, plan["batch"]), plan["device"])
                for base in bases for impl in IMPLS]
    print(f"{rows[0]['device']}; Qwen2-shaped, {params / 1e6:.0f}M parameters (random init), "
          f"{steps} steps of {plan['batch'][0]} x {plan['batch'][1]} tokens, LoRA r={RANK} on {TARGETS}")
    print_table(rows)


if __name__ == "__main__":
    main()
