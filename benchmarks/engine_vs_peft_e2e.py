"""The --e2e mode of engine_vs_peft.py: whole training pipelines on the sample data, not identical batches.

    .venv/bin/python benchmarks/engine_vs_peft.py --e2e [--models llama,minilm] [--steps N] [--threads 1]

Data and tokenization are the same for all three: trainer.data.dataset.prepare on a sample dataset (features of
the 90 % training split). What differs is what each pipeline does with them, per optimizer step:
- engine: trainer.train's own loop (`_Run._windows` / `_Run._step`): length-grouped batches (batch_order),
          dynamic padding (collate), the engine's loss (batch_loss_sum / target_count), AdamW, clipping, schedule;
- peft:   peft.get_peft_model, the batches a standard HF setup makes (the examples shuffled with the same seed,
          cut into batches in that order, each padded to its longest row, like DataCollatorWithPadding in the HF
          Trainer with group_by_length=False), transformers' loss (`model(**batch).loss`), the same AdamW,
          clipping and schedule;
- torch:  the textbook LoRA module of engine_vs_peft.py with the PEFT-style batches and loss.
Models: "llama", the benchmark's tiny random Llama (4 layers, hidden 256) saved with save_pretrained and a 2048-token
byte-level BPE (trainer.demo_models' recipe) on the sample instruction set (alpaca, loss on the answers only);
"minilm", the real MiniLM-L6 ("demo/minilm-l6") on the sample support-ticket set (5 labels). Batch size 8 and
the LoRA settings of engine_vs_peft.py.

Speed: one process builds all three and runs their steps in turn (rotated each round) after warm-up; reported as
non-padding tokens per second of wall time and per CPU-second, over all timed steps (batches differ in size, so
totals, not a median). Padding fraction: padded positions that are padding over those steps. Memory: one fresh
process per implementation running the same steps, peak RSS growth from right after setup.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from lora_bench import ALPHA, DROPOUT, IMPLS, RANK, TARGETS, build_llama, format_table, in_subprocess, rss_kib, \
    textbook_lora

BATCH_SIZE = 8
WARMUP_STEPS = 2
SEED = 0
# name: (sample dataset, task, default timed steps per implementation)
E2E_MODELS = {"llama": ("instructions", "causal-lm", 24), "minilm": ("support-tickets", "classification", 24)}


def write_inputs(folder: Path) -> None:
    """The sample datasets and the tiny Llama folder (model + tokenizer) under `folder`."""
    from trainer.demo_models import build_tokenizer, corpus_text
    from trainer.samples import write_sample

    for sample, _, _ in E2E_MODELS.values():
        write_sample(sample, folder)
    tokenizer = build_tokenizer(corpus_text(), 2048)
    model, _, _ = build_llama(vocab=len(tokenizer))
    model.config.pad_token_id = model.config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder / "tiny-llama")
    tokenizer.save_pretrained(folder / "tiny-llama")


def _config(model_name: str, folder: Path, total_steps: int):
    from trainer.config import LoraSettings, TrainConfig
    from trainer.samples import SAMPLES

    sample, task, _ = E2E_MODELS[model_name]
    model = str(folder / "tiny-llama") if model_name == "llama" else "demo/minilm-l6"
    return TrainConfig(model=model, data=str(folder / SAMPLES[sample].filename), out=str(folder / "out"), task=task,
                       lora=LoraSettings(rank=RANK, alpha=ALPHA, dropout=DROPOUT, targets=TARGETS),
                       batch_size=BATCH_SIZE, max_steps=total_steps, seed=SEED, device="cpu", checkpoint_every=0)


def _prepare(config):
    """The engine's features of the training split (trainer.data.dataset.prepare), shared by all three."""
    from trainer.data.dataset import prepare
    from trainer.models import load_tokenizer, resolve_model_path

    return prepare(config, load_tokenizer(resolve_model_path(config.model)))


def _engine(config, prepared):
    """trainer.train's run up to its loop (model, LoRA, optimizer, schedule); its step as a closure."""
    from trainer.reporter import NullReporter
    from trainer.train import _Run, precision, seed_everything

    run = _Run(config, NullReporter())
    seed_everything(config.seed)
    run.device = "cpu"
    run.autocast, run.scaler = precision("cpu")
    run.train_features, run.eval_features, run.label_mapping, run.data_stats = prepared
    run._load_model()
    run._plan()
    windows = run._windows(0, 0)

    def step() -> list[dict]:
        window = next(windows)[2]
        run._step(window)
        return window

    return step, run.model


def _standard(config, impl: str, prepared):
    """PEFT or textbook LoRA on the engine's features, batched and trained the standard HF way."""
    import random

    import torch

    from trainer.data.batching import collate
    from trainer.models import load_model
    from trainer.schedule import make_scheduler, warmup_steps_for
    from trainer.targets import resolve_targets
    from trainer.train import seed_everything

    seed_everything(config.seed)
    features, _, label_mapping, _ = prepared
    id2label = dict(enumerate(label_mapping)) if label_mapping else None
    model, tokenizer = load_model(config.model, config.task, id2label=id2label)
    names = resolve_targets(model, TARGETS)
    if impl == "peft":
        from peft import LoraConfig, get_peft_model

        task_type = "SEQ_CLS" if config.task == "classification" else "CAUSAL_LM"
        model = get_peft_model(model, LoraConfig(task_type=task_type, r=RANK, lora_alpha=ALPHA,
                                                 lora_dropout=DROPOUT, target_modules=names))
    else:
        model = textbook_lora(model, names)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = make_scheduler(optimizer, config.scheduler, config.max_steps,
                               warmup_steps_for(config.max_steps, config.warmup))

    def batches():
        rng = random.Random(config.seed)
        while True:  # a new shuffle each epoch, batches in shuffled order
            order = list(range(len(features)))
            rng.shuffle(order)
            for start in range(0, len(order), config.batch_size):
                yield collate([features[i] for i in order[start:start + config.batch_size]], tokenizer.pad_token_id)

    stream = batches()

    def step() -> list[dict]:
        batch = next(stream)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
        return [batch]

    return step, model


def _build(model_name: str, folder: Path, steps: int, impls=IMPLS) -> dict:
    config = _config(model_name, folder, WARMUP_STEPS + steps)
    prepared = _prepare(config)
    return {impl: _engine(config, prepared) if impl == "engine" else _standard(config, impl, prepared)
            for impl in impls}


def _counts(window: list[dict]) -> tuple[int, int]:
    return (sum(int(b["attention_mask"].sum()) for b in window), sum(b["attention_mask"].numel() for b in window))


def measure_speed(model_name: str, folder: str, steps: int, threads: int) -> list[dict]:
    import torch

    torch.set_num_threads(threads)
    built = _build(model_name, Path(folder), steps)
    for _ in range(WARMUP_STEPS):
        for impl in IMPLS:
            built[impl][0]()
    totals = {impl: {"impl": impl, "wall_s": 0.0, "cpu_s": 0.0, "tokens": 0, "positions": 0} for impl in IMPLS}
    for round_index in range(steps):
        for impl in IMPLS[round_index % 3:] + IMPLS[:round_index % 3]:
            wall, cpu = time.perf_counter(), time.process_time()
            window = built[impl][0]()
            total = totals[impl]
            total["wall_s"] += time.perf_counter() - wall
            total["cpu_s"] += time.process_time() - cpu
            tokens, positions = _counts(window)
            total["tokens"] += tokens
            total["positions"] += positions
    return list(totals.values())


def measure_memory(model_name: str, folder: str, impl: str, steps: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    step, model = _build(model_name, Path(folder), steps, impls=(impl,))[impl]
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
    rss_before = rss_kib("VmRSS")
    for _ in range(WARMUP_STEPS + steps):
        step()
    return {"impl": impl, "peak_mb": (rss_kib("VmHWM") - rss_before) / 1024,
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "params": sum(p.numel() for p in model.parameters())}


def benchmark(model_name: str, folder: Path, steps: int | None, threads: int) -> list[dict]:
    steps = steps or E2E_MODELS[model_name][2]
    speed = in_subprocess(__file__, "e2e-speed", model_name, str(folder), str(steps), str(threads))
    memory = {impl: in_subprocess(__file__, "e2e-memory", model_name, str(folder), impl, str(steps), str(threads))
              for impl in IMPLS}
    rows = []
    for timing in speed:
        rows.append({"model": model_name, "data": E2E_MODELS[model_name][0], "steps": steps, **timing,
                     **memory[timing["impl"]], "tokens_per_s": timing["tokens"] / timing["wall_s"],
                     "tokens_per_cpu_s": timing["tokens"] / timing["cpu_s"],
                     "padding": 1 - timing["tokens"] / timing["positions"]})
    peft = rows[IMPLS.index("peft")]
    for row in rows:
        row["speed_vs_peft"] = row["tokens_per_cpu_s"] / peft["tokens_per_cpu_s"]
        row["memory_vs_peft"] = row["peak_mb"] / peft["peak_mb"]
    return rows


def worker(kind: str, rest: list[str]) -> None:
    if kind == "e2e-speed":
        print(json.dumps(measure_speed(rest[0], rest[1], int(rest[2]), int(rest[3]))))
    else:
        print(json.dumps(measure_memory(rest[0], rest[1], rest[2], int(rest[3]), int(rest[4]))))


def main(models: list[str], steps: int | None, threads: int, markdown: bool) -> None:
    unknown = [name for name in models if name not in E2E_MODELS]
    if unknown:
        raise SystemExit(f"--e2e: unknown model {', '.join(unknown)}; choose from {', '.join(E2E_MODELS)}")
    with tempfile.TemporaryDirectory(prefix="engine-vs-peft-e2e-") as tmp:
        folder = Path(tmp)
        write_inputs(folder)
        rows = [row for name in models for row in benchmark(name, folder, steps, threads)]
    timed = ", ".join(f"{r['model']} {r['steps']}" for r in rows[::len(IMPLS)])
    print(f"CPU, {threads} thread(s), end to end on the sample data: batch {BATCH_SIZE}, {WARMUP_STEPS} warm-up then "
          f"{timed} timed steps per implementation, "
          f"interleaved in one process; tokens = non-padding tokens; memory: peak RSS growth over the same steps, "
          f"one fresh process each. engine: length-grouped batches + engine loss; peft/torch: shuffled batches "
          f"padded to their longest row + transformers' loss. LoRA r={RANK} alpha={ALPHA} dropout={DROPOUT} "
          f"targets={TARGETS}")
    header = ["model", "data", "params", "impl", "tokens", "padding", "tokens/s", "tokens/CPU-s", "peak MB",
              "speed vs PEFT", "memory vs PEFT"]
    lines = [[r["model"], r["data"], f"{r['params'] / 1e6:.1f}M", r["impl"], str(r["tokens"]), f"{r['padding']:.1%}",
              f"{r['tokens_per_s']:.0f}", f"{r['tokens_per_cpu_s']:.0f}", f"{r['peak_mb']:.0f}",
              f"{r['speed_vs_peft']:.2f}x", f"{r['memory_vs_peft']:.2f}x"] for r in rows]
    print(format_table(header, lines, markdown))


if __name__ == "__main__":  # a measurement process started by in_subprocess: --worker KIND ARGS...
    worker(sys.argv[2], sys.argv[3:])
