import math

import pytest
import torch
from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

from trainer.schedule import lr_factor, make_scheduler, warmup_steps_for


def _lrs(scheduler, optimizer, steps):
    seen = []
    for _ in range(steps):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


def _optimizer(lr=1e-3):
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=lr)


@pytest.mark.parametrize("kind, reference", [("cosine", get_cosine_schedule_with_warmup),
                                              ("linear", get_linear_schedule_with_warmup)])
def test_schedule_matches_transformers_curves(kind, reference):
    ours_opt, ref_opt = _optimizer(), _optimizer()
    ours = _lrs(make_scheduler(ours_opt, kind, 20, 3), ours_opt, 20)
    ref = _lrs(reference(ref_opt, 3, 20), ref_opt, 20)
    assert ours == pytest.approx(ref, abs=1e-12)


def test_warmup_rises_linearly_from_zero_then_cosine_reaches_half_at_midpoint():
    assert [lr_factor(s, 104, 4) for s in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert lr_factor(54, 104, 4) == pytest.approx(0.5)
    assert lr_factor(104, 104, 4) == pytest.approx(0.0, abs=1e-12)


def test_linear_decay_falls_by_equal_steps():
    assert [lr_factor(s, 4, 0, "linear") for s in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]


def test_warmup_fraction_rounds_up_to_whole_steps():
    assert warmup_steps_for(100, 0.03) == 3
    assert warmup_steps_for(10, 0.03) == 1
    assert warmup_steps_for(10, 0.0) == 0


def test_scheduler_and_optimizer_state_round_trip_mid_run():
    first_opt = _optimizer()
    first = make_scheduler(first_opt, "cosine", 10, 2)
    _lrs(first, first_opt, 4)
    resumed_opt = _optimizer()
    resumed = make_scheduler(resumed_opt, "cosine", 10, 2)
    resumed_opt.load_state_dict(first_opt.state_dict())  # the optimizer carries the current lr
    resumed.load_state_dict(first.state_dict())
    assert _lrs(resumed, resumed_opt, 3) == pytest.approx(_lrs(first, first_opt, 3))
    assert resumed_opt.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 5 / 8)))
