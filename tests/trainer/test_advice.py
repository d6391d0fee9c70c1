"""The settings advisor's rules, each against a count done here: enough optimizer steps, the largest batch that keeps
enough steps an epoch and fits the worker's memory (by trainer.estimate), a max length that covers the rows, a
learning rate that falls with the model's size. That the advised settings give a visible change on the demo models
is checked by training them in the browser suites (tests/e2e/test_classification_path.py,
tests/e2e/test_advised_settings_browser.py)."""
import math

import pytest

import tiny_models
from trainer.advice import (ADVISED_FIELDS, DPO_TARGET_STEPS, HEADROOM, MAX_EPOCHS, MIN_STEPS_PER_EPOCH, TARGET_STEPS,
                            advise, values)
from trainer.estimate import estimate
from trainer.inspect_model import inspect

STATS = {"min": 10, "median": 30, "p95": 40, "max": 45, "mean": 29.0, "estimated": False}


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return inspect(str(tiny_models.save_tiny("llama", tmp_path_factory.mktemp("llama"))), task="causal-lm")


def planned_steps(advice: dict, train_rows: int) -> tuple[int, int]:
    """(steps in all, steps an epoch) of the advised run, counted here."""
    per_epoch = math.ceil(train_rows / advice["batch_size"])
    return advice["epochs"] * per_epoch, per_epoch


@pytest.mark.parametrize("rows,task", [(120, "causal-lm"), (400, "causal-lm"), (90, "classification"),
                                       (600, "classification"), (50_000, "causal-lm")])
def test_the_run_reaches_the_tasks_step_target_with_no_epoch_more_than_needed(llama, rows, task):
    advice = values(advise(llama, task=task, rows=rows, token_stats=STATS))
    train_rows = math.floor(rows * 0.9)
    steps, per_epoch = planned_steps(advice, train_rows)
    assert steps >= TARGET_STEPS[task]
    assert advice["epochs"] == 1 or steps - per_epoch < TARGET_STEPS[task]
    assert per_epoch >= MIN_STEPS_PER_EPOCH


@pytest.mark.parametrize("rows", [240, 2000])
def test_a_dpo_run_reaches_dpos_smaller_step_target_with_no_epoch_more_than_needed(llama, rows):
    advice = advise(llama, task="causal-lm", rows=rows, token_stats=STATS, method="dpo")
    steps, per_epoch = planned_steps(values(advice), math.floor(rows * 0.9))
    assert DPO_TARGET_STEPS <= steps < TARGET_STEPS["causal-lm"]
    assert advice["epochs"].value == 1 or steps - per_epoch < DPO_TARGET_STEPS
    assert f"about {DPO_TARGET_STEPS} steps" in advice["epochs"].reason or advice["epochs"].value == 1


def test_a_tiny_dataset_is_capped_at_the_most_epochs(llama):
    advice = advise(llama, task="causal-lm", rows=5, token_stats=STATS)
    assert advice["epochs"].value == MAX_EPOCHS and advice["batch_size"].value == 1
    assert "capped" in advice["epochs"].reason


def test_every_setting_comes_with_a_reason(llama):
    advice = advise(llama, task="causal-lm", rows=120, token_stats=STATS)
    assert list(advice) == list(ADVISED_FIELDS)
    assert all(item.reason and "\n" not in item.reason for item in advice.values())
    assert advice["alpha"].value == 2 * advice["rank"].value


def test_the_batch_is_the_largest_that_fits_the_workers_memory(llama):
    free = advise(llama, task="causal-lm", rows=5000, token_stats=STATS)
    assert free["batch_size"].value == 16  # enough rows and no memory bound: the largest offered

    def peak(batch):
        return estimate(llama, targets=free["targets"].value, rank=free["rank"].value, task="causal-lm",
                        batch_size=batch, max_length=free["max_length"].value, device="cuda")["memory"]["total"]
    capacity = {"device": "cuda", "memory_bytes": math.ceil(peak(4) / HEADROOM)}
    bound = advise(llama, task="causal-lm", rows=5000, token_stats=STATS, capacity=capacity)
    assert bound["batch_size"].value == 4 and peak(8) > HEADROOM * capacity["memory_bytes"]
    assert "memory" in bound["batch_size"].reason

    none_fits = advise(llama, task="causal-lm", rows=5000, token_stats=STATS,
                       capacity={"device": "cuda", "memory_bytes": peak(1) // 2})
    assert none_fits["batch_size"].value == 1 and "more than this worker's" in none_fits["batch_size"].reason


def test_max_length_covers_the_rows_in_steps_of_32_within_the_models_positions(llama):
    def length(**stats):
        return advise(llama, task="causal-lm", rows=200, token_stats={**STATS, **stats})["max_length"].value

    assert length(max=45) == 64  # every row
    assert length(p95=40, max=500) == 64  # one long outlier: the 95th percentile
    assert length(p95=150, max=200) == 224  # every row, since the longest is not an outlier
    positions = llama["max_positions"]
    assert length(p95=5000, max=6000) == min(positions, 2048)
    # A byte estimate gets a margin: a wide one for the tiny Llama's small vocabulary.
    assert llama["vocab_size"] < 8192 and length(max=45, estimated=True) == 128  # 45 x 2.5 = 112.5
    assert advise(llama, task="causal-lm", rows=200, token_stats={})["max_length"].value == min(512, positions)


def test_bigger_models_get_smaller_learning_rates_and_classifiers_only_attention(llama):
    rates = [advise({**llama, "total_params": size}, task="causal-lm", rows=500, token_stats=STATS)["lr"].value
             for size in (1_000_000, 100_000_000, 1_000_000_000, 7_000_000_000)]
    assert rates == sorted(rates, reverse=True) and rates[-1] == 2e-4 and rates[0] == 2e-3
    assert advise(llama, task="causal-lm", rows=500, token_stats=STATS)["targets"].value == "attention+mlp"
    assert advise(llama, task="classification", rows=500, token_stats=STATS)["targets"].value == "attention"
    big = {**llama, "total_params": 7_000_000_000}
    assert advise(big, task="causal-lm", rows=500, token_stats=STATS)["rank"].value == 8
    assert advise(big, task="causal-lm", rows=5000, token_stats=STATS)["rank"].value == 16


def test_dpo_adds_an_sft_term_strong_for_small_models_with_larger_steps_and_sft_none(llama):
    def advised(size, method):
        return values(advise({**llama, "total_params": size}, task="causal-lm", rows=500, token_stats=STATS,
                             method=method))

    small, big = advised(1_000_000, "dpo"), advised(7_000_000_000, "dpo")
    assert (small["rpo_alpha"], small["lr"]) == (10.0, 1e-2)
    assert (big["rpo_alpha"], big["lr"]) == (1.0, advised(7_000_000_000, "sft")["lr"]) == (1.0, 2e-4)
    assert advised(1_000_000, "sft")["rpo_alpha"] == 0.0 and advised(1_000_000, "sft")["lr"] == 2e-3
