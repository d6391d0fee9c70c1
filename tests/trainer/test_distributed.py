"""Data-parallel training (trainer.distributed) on real processes: 2 gloo ranks of 1 thread each against the same
job in 1 process with twice the batch. Nothing of torch.distributed is mocked: rank 0 runs in this test's process
(as it does in a worker), rank 1 is a child process, and they meet over TCP on 127.0.0.1.

Tolerance. The 2-rank run computes the same gradient as the 1-process run in another order: each rank sums its
rows' losses over its own padded width, and the all-reduce adds the two partial sums, where one process sums all
rows in one go. In float32 that changes a gradient by a few units in the last place (relative 1e-7); AdamW divides
the first moment by the root of the second, so the update moves by about lr x that relative error, and over 7 steps
of lr 1e-2 the weights can drift by well under 1e-6. Measured: 2e-7 at most. ATOL = 1e-5 leaves a margin of 50x,
and is 1000x smaller than how far training moves the weights (|lora_B| reaches 1e-2 from zero). To show the
tolerance tells runs apart, a 1-process run with the per-rank batch (4, not 8) must differ by over 100 x ATOL.
The bound holds while training is stable: at lr 1e-2 for 300 steps this tiny model is chaotic enough that the same
rounding grows to 0.14 (measured), so longer runs (tests/workers/test_data_parallel_jobs.py) use lr 1e-3 (1e-7).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from trainer.config import LoraSettings, TrainConfig
from trainer.distributed import rows_of, train_data_parallel
from trainer.errors import ConfigError, ProcessLost
from trainer.reporter import NullReporter
from trainer.train import train

ATOL = 1e-5
ROOT = Path(__file__).resolve().parents[2]
WORDS = ["red", "blue", "green", "gold", "pink", "gray", "teal", "navy", "plum", "rose"]


@pytest.fixture(autouse=True)
def one_thread_per_process(monkeypatch):
    """Rank 0 (this process) and the children (through OMP_NUM_THREADS) use one thread each."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def data(tmp_path) -> tuple[Path, Path]:
    """20 training rows of mixed lengths (global batch 8: batches of 8, 8, 4, so each epoch's last batch leaves
    rank 1 without rows) and a separate held-out file."""
    rows = [{"prompt": f"Say {w} {i}:", "completion": f" {w} and {w}" * (1 + i % 3)} for i, w in enumerate(WORDS * 2)]
    held = [{"prompt": "Say lime:", "completion": " lime and lime"}, {"prompt": "Say ruby:", "completion": " ruby"}]
    train_file, eval_file = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    train_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    eval_file.write_text("".join(json.dumps(row) + "\n" for row in held))
    return train_file, eval_file


@pytest.fixture
def config(tmp_path, tiny_llama_dir, data):
    def make(out: str, batch_size: int, **overrides) -> TrainConfig:
        values = dict(model=str(tiny_llama_dir), data=str(data[0]), eval_data=str(data[1]), out=str(tmp_path / out),
                      max_steps=7, batch_size=batch_size, lr=1e-2, checkpoint_every=0,
                      lora=LoraSettings(rank=4, dropout=0.0))
        return TrainConfig(**{**values, **overrides})
    return make


def adapter(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "adapter" / "adapter_model.safetensors"))


def largest_difference(a: dict, b: dict) -> float:
    assert set(a) == set(b)
    return max(float((a[key] - b[key]).abs().max()) for key in a)


def optimizer_steps(out: Path) -> int:
    """AdamW's own step count, read from the last checkpoint's optimizer state (not the loop's counter)."""
    newest = sorted((out / "checkpoints").glob("step-*"))[-1]
    state = torch.load(newest / "state.pt", weights_only=True)["optimizer"]["state"]
    return {int(value["step"]) for value in state.values()}.pop()


def test_two_processes_of_batch_4_train_the_adapter_one_process_of_batch_8_trains(config, tmp_path):
    one = train(config("one", 8, checkpoint_every=3))
    two = train_data_parallel(config("two", 4, checkpoint_every=3), processes=2, timeout_s=120)

    assert two["processes"] == 2 and two["global_batch_size"] == 8 and one["processes"] == 1
    assert two["steps"] == one["steps"] == 7 and two["total_steps"] == one["total_steps"]
    assert optimizer_steps(tmp_path / "two") == optimizer_steps(tmp_path / "one") == 7
    assert [h["loss"] for h in two["history"]] == pytest.approx([h["loss"] for h in one["history"]], rel=1e-5)
    assert two["train_tokens"] == one["train_tokens"]
    assert two["final_eval"]["eval_loss"] == pytest.approx(one["final_eval"]["eval_loss"], rel=1e-5)
    expected, got = adapter(tmp_path / "one"), adapter(tmp_path / "two")
    assert largest_difference(got, expected) < ATOL
    assert max(float(t.abs().max()) for k, t in expected.items() if "lora_B" in k) > 1000 * ATOL  # it trained
    # Rank 0 alone wrote, and what a single process writes.
    out = tmp_path / "two"
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "checkpoints", "metrics.json"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000006", "step-000007"]

    train(config("half", 4))  # one process on one rank's batch: another run, which the tolerance must tell apart
    assert largest_difference(adapter(tmp_path / "half"), expected) > 100 * ATOL


def test_a_rank_gets_its_rows_of_a_batch_without_their_padding_and_none_of_a_short_last_batch():
    batch = {"input_ids": torch.arange(12).reshape(3, 4),
             "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]]),
             "labels": torch.arange(12).reshape(3, 4)}
    assert rows_of(batch, 0, 2)["input_ids"].tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    share = rows_of(batch, 1, 2)  # row 2 only, trimmed to its one real token
    assert share["input_ids"].tolist() == [[8]] and share["attention_mask"].tolist() == [[1]]
    assert share["labels"].tolist() == [[8]]
    assert rows_of(batch, 2, 2) is None
    classes = {**batch, "labels": torch.tensor([0, 1, 2])}
    assert rows_of(classes, 1, 2)["labels"].tolist() == [2]


class KillRankAt(NullReporter):
    """Rank 0's reporter: at `step`, SIGKILLs the other rank and waits until it is gone."""

    def __init__(self, step: int):
        self.step, self.pids = step, []

    def on_step(self, step, *args, **kwargs):
        if step == self.step:
            for pid in self.pids:
                os.kill(pid, signal.SIGKILL)
            for pid in self.pids:
                while _alive(pid):
                    time.sleep(0.05)


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/stat")
    return status.exists() and status.read_text().split()[2] != "Z"


def test_a_killed_rank_ends_the_run_which_resumes_from_its_checkpoint_on_two_processes_or_on_one(config, tmp_path):
    one = train(config("one", 8))
    killer = KillRankAt(5)
    with pytest.raises(ProcessLost, match="rank 1 was killed by SIGKILL.*resume it"):
        train_data_parallel(config("two", 4, checkpoint_every=2), killer, processes=2, timeout_s=120,
                            on_start=killer.pids.extend)
    checkpoints = tmp_path / "two" / "checkpoints"
    assert [p.name for p in sorted(checkpoints.iterdir())] == ["step-000002", "step-000004"]
    assert not (tmp_path / "two" / "adapter").exists()
    for copy in ("single", "mismatch"):  # the 2-process checkpoint, for 1-process resumes
        shutil.copytree(checkpoints / "step-000004", tmp_path / copy / "checkpoints" / "step-000004")

    resumed = train_data_parallel(config("two", 4, checkpoint_every=2, resume=True), processes=2, timeout_s=120)
    assert resumed["resumed_from_step"] == 4 and resumed["steps"] == 7
    assert optimizer_steps(tmp_path / "two") == 7
    assert [h["loss"] for h in resumed["history"]] == pytest.approx([h["loss"] for h in one["history"]], rel=1e-5)
    assert largest_difference(adapter(tmp_path / "two"), adapter(tmp_path / "one")) < ATOL

    alone = train(config("single", 8, resume=True))  # the same global batch of 8 in one process
    assert alone["resumed_from_step"] == 4
    assert largest_difference(adapter(tmp_path / "single"), adapter(tmp_path / "one")) < ATOL
    with pytest.raises(ConfigError, match=r"2 process\(es\) with 8 rows a batch in all; this one has 1 x 4 = 4"):
        train(config("mismatch", 4, resume=True))


def test_a_rank_that_dies_before_the_ranks_meet_ends_the_run_at_once(config, tmp_path):
    """Rank 0 would otherwise wait the whole rendezvous timeout (10 minutes) for it."""
    def kill(pids):
        for pid in pids:
            os.kill(pid, signal.SIGKILL)

    with pytest.raises(ProcessLost, match="rank 1 was killed by SIGKILL"):
        train_data_parallel(config("early", 4), processes=2, timeout_s=120, on_start=kill)
    assert not (tmp_path / "early").exists()  # it stopped before training started


def _cli(config: TrainConfig, *flags: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "trainer", "train", "--model", config.model, "--data", config.data, "--eval-data",
         config.eval_data, "--out", config.out, "--batch-size", str(config.batch_size), "--max-steps", "100000",
         "--checkpoint-every", "2", "--rank", "4", "--dropout", "0", *flags],
        cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)


def _other_rank(cli: subprocess.Popen, out: Path) -> int:
    """The child rank's pid, once the run has written a checkpoint (so both ranks are training). Any checkpoint: the
    run keeps only its newest two, so on a busy machine step 2's can be gone before a poll sees it."""
    deadline = time.monotonic() + 120
    while not any((out / "checkpoints").glob("step-*")):
        if cli.poll() is not None or time.monotonic() > deadline:
            cli.kill()  # a run of 100,000 steps must not outlive the test
            pytest.fail(f"no checkpoint within 120 s (exit {cli.poll()}): {cli.communicate()[1][-2000:]}")
        time.sleep(0.1)
    children = Path(f"/proc/{cli.pid}/task/{cli.pid}/children").read_text().split()
    assert len(children) == 1
    return int(children[0])


@pytest.mark.parametrize("victim", ["rank 1", "rank 0"])
def test_the_command_line_run_ends_with_a_message_when_a_rank_is_killed(config, tmp_path, victim):
    """`python -m trainer train --processes 2`: killing rank 1 makes the command exit 2 naming it; killing rank 0
    (the command itself) makes rank 1 exit on its own instead of waiting in a collective."""
    settings = config("cli", 4)
    cli = _cli(settings, "--processes", "2")
    other = _other_rank(cli, Path(settings.out))
    child = subprocess.Popen(["tail", f"--pid={other}", "-f", "/dev/null"])  # waits for the rank to end
    os.kill(other if victim == "rank 1" else cli.pid, signal.SIGKILL)
    _, stderr = cli.communicate(timeout=60)
    if victim == "rank 1":
        assert cli.returncode == 2
        assert "error: data-parallel training stopped: rank 1 was killed by SIGKILL" in stderr
    else:
        assert cli.returncode == -signal.SIGKILL
    child.wait(timeout=60)  # rank 1 is gone in both cases: nothing hangs
    assert not _alive(other)


def test_a_rank_that_stops_answering_ends_the_run_after_the_collective_timeout(config, tmp_path):
    settings = config("stuck", 4)
    cli = _cli(settings, "--processes", "2", "--collective-timeout-s", "8")
    other = _other_rank(cli, Path(settings.out))
    os.kill(other, signal.SIGSTOP)  # alive but silent: only the timeout can tell
    _, stderr = cli.communicate(timeout=90)
    assert cli.returncode == 2
    assert "data-parallel training stopped: a collective between the 2 processes failed or waited over 8 s" in stderr
    assert not _alive(other)  # the launcher stopped it


def test_data_parallel_runs_refuse_dpo_and_a_bad_process_count(config):
    with pytest.raises(ConfigError, match="processes: data-parallel training runs sft jobs"):
        train_data_parallel(config("dpo", 4, method="dpo"), processes=2)
    with pytest.raises(ConfigError, match="processes must be a whole number of at least 1"):
        train_data_parallel(config("zero", 4), processes=0)


def test_torchrun_starts_the_command_as_two_ranks_that_train_the_one_process_adapter(config, tmp_path):
    expected = train(config("one", 8))
    settings = config("torchrun", 4)
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "trainer", "train", "--model",
         settings.model, "--data", settings.data, "--eval-data", settings.eval_data, "--out", settings.out,
         "--batch-size", "4", "--max-steps", "7", "--lr", "0.01", "--checkpoint-every", "0", "--rank", "4",
         "--dropout", "0"],
        cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads(done.stdout)  # rank 0's alone: one JSON document
    assert metrics["processes"] == 2 and metrics["steps"] == expected["steps"] == 7
    assert largest_difference(adapter(tmp_path / "torchrun"), adapter(tmp_path / "one")) < ATOL
