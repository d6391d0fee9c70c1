"""benchmarks/gpu_check.py is run by hand on a GPU machine, not in CI: here it must import, parse its arguments,
refuse to start without CUDA unless asked for --smoke, and its per-run function must train a tiny Qwen2 on this
CPU on both bases with both implementations (what a GPU run does, at smoke size)."""
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import gpu_check  # noqa: E402


def test_unknown_bases_are_refused_by_name():
    with pytest.raises(SystemExit) as raised:
        gpu_check.main(["--smoke", "--bases", "fp8"])
    assert raised.value.code == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_without_cuda_the_full_check_says_to_use_a_gpu_or_smoke(capsys):
    with pytest.raises(SystemExit):
        gpu_check.main([])
    assert "no CUDA device here" in capsys.readouterr().err


@pytest.mark.parametrize("base, impl", [("nf4", "ours"), ("bf16", "peft")])
def test_one_smoke_run_trains_on_cpu_and_reports_its_speed(tmp_path, base, impl):
    gpu_check.build_model(tmp_path, gpu_check.SMOKE["shape"])
    row = gpu_check.run_one(str(tmp_path), base, impl, steps=2, batch_shape=(2, 16), device="cpu")
    assert (row["base"], row["impl"], row["device"], row["peak_bytes"]) == (base, impl, "cpu", None)
    assert row["tokens_per_s"] > 0 and math.isfinite(row["first_loss"]) and math.isfinite(row["last_loss"])
    # Random tokens over a 512-word vocabulary: a loss near ln 512 = 6.24, the untrained model's.
    assert abs(row["first_loss"] - math.log(512)) < 0.5
