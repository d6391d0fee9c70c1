"""CI's loose regression guard on the engine's speed: fails when our LoRA engine trains below 0.9x PEFT's tokens
per second, or when the two stop computing the same losses.

    .venv/bin/python benchmarks/engine_speed_guard.py [--rounds 12] [--threads 1] [--floor 0.9]

The tiny Llama of engine_vs_peft.py (random init, 8 x 64 tokens per step, every token a label) is built twice,
once with the engine's LoRA and once with PEFT's; PEFT gets the engine's initial LoRA weights (through the
engine's PEFT-layout export) and dropout is off, so both must compute the same loss at every step. Their steps
run interleaved in one process (engine, peft, then peft, engine, ...), so both see the same machine load; each
side's speed is its best step after warm-up, measured in tokens per CPU-second of this process: on a noisy shared
machine the fastest step is the least disturbed one. This is a guard against a regression, not a benchmark:
the benchmark's figures come from engine_vs_peft.py. Exit status 0 when both checks pass, 1 otherwise.
"""
from __future__ import annotations

import argparse
import time

from engine_vs_peft import WARMUP_STEPS, prepare, trainer_step

MODEL = "llama"
LOSS_RTOL = 1e-4  # float32 sums in another order (hidden-state vs logits loss): ~1e-6 apart in practice


def start_equal():
    """(engine model, PEFT model, batch, task): the same base, the same LoRA weights, dropout off."""
    from peft import set_peft_model_state_dict

    from trainer.adapter_io import adapter_state_dict

    engine, batch, _, task = prepare(MODEL, "engine", dropout=0.0)
    peft, _, _, _ = prepare(MODEL, "peft", dropout=0.0)
    tensors = {key: value.detach().clone() for key, value in adapter_state_dict(engine, []).items()}
    loaded = set_peft_model_state_dict(peft, tensors)
    if loaded.unexpected_keys:
        raise SystemExit(f"PEFT did not take the engine's LoRA weights: {loaded.unexpected_keys[:3]}")
    return engine, peft, batch, task


def measure(rounds: int, threads: int) -> dict:
    """Losses and CPU seconds of every step of each side (warm-up steps included in the losses only)."""
    import torch

    torch.set_num_threads(threads)
    engine, peft, batch, task = start_equal()
    steps = {"engine": trainer_step(engine, batch, "engine", task), "peft": trainer_step(peft, batch, "peft", task)}
    losses, seconds = {"engine": [], "peft": []}, {"engine": [], "peft": []}
    for round_index in range(WARMUP_STEPS + rounds):
        for impl in ("engine", "peft") if round_index % 2 == 0 else ("peft", "engine"):
            cpu = time.process_time()
            losses[impl].append(steps[impl]())
            if round_index >= WARMUP_STEPS:
                seconds[impl].append(time.process_time() - cpu)
    return {"losses": losses, "seconds": seconds, "tokens": batch["input_ids"].numel()}


def verdict(result: dict, floor: float) -> tuple[bool, str]:
    """(passed?, the lines to print) for a `measure` result."""
    speed = {impl: result["tokens"] / min(seconds) for impl, seconds in result["seconds"].items()}
    ratio = speed["engine"] / speed["peft"]
    pairs = list(zip(result["losses"]["engine"], result["losses"]["peft"]))
    worst = max(abs(a - b) / abs(b) for a, b in pairs)
    lines = [f"engine {speed['engine']:.0f} tokens/CPU-s, PEFT {speed['peft']:.0f} (best of "
             f"{len(result['seconds']['engine'])} interleaved steps each): {ratio:.2f}x PEFT, floor {floor:.2f}x",
             f"losses over {len(pairs)} steps: engine {pairs[0][0]:.5f} -> {pairs[-1][0]:.5f}, PEFT {pairs[0][1]:.5f}"
             f" -> {pairs[-1][1]:.5f}; largest relative difference {worst:.1e} (allowed {LOSS_RTOL:.0e})"]
    if ratio < floor:
        lines.append(f"FAIL: the engine trains at {ratio:.2f}x PEFT's speed, below {floor:.2f}x")
    if worst > LOSS_RTOL:
        lines.append("FAIL: the engine's losses differ from PEFT's from the same start")
    return ratio >= floor and worst <= LOSS_RTOL, "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12, help="timed steps per implementation (default 12)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--floor", type=float, default=0.9, help="the lowest engine/PEFT speed ratio that passes")
    args = parser.parse_args()
    passed, report = verdict(measure(args.rounds, args.threads), args.floor)
    print(report)
    raise SystemExit(0 if passed else 1)


if __name__ == "__main__":
    main()
