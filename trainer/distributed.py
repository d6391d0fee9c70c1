"""Data-parallel training: one job as N processes joined by torch.distributed (gloo on CPU, NCCL on GPUs).

    global batch k = N·b rows (batch_order with batch N·b: the order one process with batch N·b would train on)
      rank 0: rows [0, b)     rank 1: rows [b, 2b)   ...   rank N-1: rows [(N-1)b, N·b)
         │ loss_sum / T          │ loss_sum / T              │            T = the targets of the whole window
         ▼ backward              ▼ backward                  ▼
      all_reduce(SUM) of one flat tensor: every trainable (LoRA A/B, heads) gradient + the step's loss
         ▼                       ▼                           ▼
      clip, AdamW, schedule: the same update on every rank, so the adapters stay equal without being sent

Summing the per-rank gradients of loss_sum/T gives the gradient of the whole window's mean loss, which is what one
process with batch N·b computes: the runs differ only by float rounding (summation order, padding widths).
Only trainable gradients travel; the frozen base never does. The step count is the single process's.

Every rank evaluates the held-out set (the same weights give the same figures, so early stopping agrees with no
message); the stop request is rank 0's reporter's, broadcast each step. Rank 0 alone reports, writes checkpoints,
best weights, samples, the adapter and metrics.json; the others write nothing. A checkpoint is a one-process one
(it records processes and the global batch), so a job resumes on N processes, or on one with batch N·b.

Launch: `train_data_parallel(config, reporter, processes=N)` runs rank 0 in the calling process (the CLI, or the
worker's task with its reporter, heartbeat and cancel as for one process) and ranks 1..N-1 as child processes
(`python -m trainer.distributed CONFIG_JSON`) that meet it through a TCP rendezvous on 127.0.0.1 (MASTER_ADDR,
MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK: what torchrun sets, so `torchrun -m trainer train ...` works as well).
Every collective has a timeout, and a rank that dies breaks its peers' connections at the next collective: rank 0
then stops the others and raises ProcessLost naming the rank and how it ended. The last checkpoint stays.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import torch
import torch.distributed as dist

from trainer.config import TrainConfig
from trainer.data.batching import batch_order
from trainer.errors import ConfigError, ProcessLost, TrainerError
from trainer.models import pick_device
from trainer.reporter import NullReporter, Reporter
from trainer.train import train

DEFAULT_TIMEOUT_S = 1800  # the longest a rank waits for the others in one collective (evals run between them)
RENDEZVOUS_TIMEOUT_S = 600  # how long the ranks may take to start (import torch, connect) before they meet
ARRIVED = "loraworks/arrived/"  # the store key each rank sets on arrival, + its rank
MEET_POLL_S = 1  # while meeting, how often rank 0 checks that the ranks it started are still alive
EXIT_WAIT_S = 10  # how long rank 0 waits for the other ranks to end on their own after a run
# After a failed collective: how long to look for a dead rank to name (its socket closes as it dies, so it is
# normally reaped at once; a rank that is alive but silent is not dead).
DEATH_WAIT_S = 2


class DataParallel:
    """What a data-parallel run changes in trainer.train's run (mixed in before it): the global batch order, this
    rank's share of each batch, the gradient all-reduce and rank-0-only writes."""

    def __init__(self, config: TrainConfig, reporter: Reporter):
        super().__init__(config, SharedStop(reporter))
        self.rank, self.processes = dist.get_rank(), dist.get_world_size()

    def _load_model(self) -> None:
        super()._load_model()
        for param in self.trainable:  # the same start everywhere, whatever each rank's RNG did (as DDP does)
            dist.broadcast(param.data, src=0)

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        return batch_order(self.train_features, self.config.batch_size * self.processes, seed=self.config.seed,
                           epoch=epoch)

    def _start(self) -> dict:
        state = super()._start()
        if self.rank:
            self.keep_best = False  # the best weights are rank 0's to write
            # dropout masks of its own, reproducible on resume (checkpoints hold rank 0's RNG)
            torch.manual_seed(hash((self.config.seed, self.rank, state["step"])) % 2**63)
        return state

    def _rows_here(self, window: list[dict]) -> list[dict]:
        shares = (rows_of(batch, self.rank, self.config.batch_size) for batch in window)
        return [share for share in shares if share is not None]

    def _sum_over_processes(self, loss: torch.Tensor) -> torch.Tensor:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.trainable]
        flat = torch.cat([g.reshape(-1) for g in grads] + [loss.reshape(1)])
        dist.all_reduce(flat)
        offset = 0
        for param in self.trainable:
            param.grad = flat[offset:offset + param.numel()].view_as(param).clone()
            offset += param.numel()
        return flat[-1]

    def _checkpoint(self, state: dict) -> None:
        if self.rank == 0:
            super()._checkpoint(state)

    def _write_samples(self, state: dict, stage: str) -> None:
        if self.rank == 0:
            super()._write_samples(state, stage)

    def _finish(self, state: dict, stopped: bool) -> dict:
        if self.rank == 0:
            return super()._finish(state, stopped)
        return {"status": "stopped" if stopped else "completed", "rank": self.rank, "steps": state["step"]}


def rows_of(batch: dict, rank: int, per_rank: int) -> dict | None:
    """Rank `rank`'s rows of a collated global batch, its padding columns trimmed (padding is on the right, so
    its longest row still fits); None when the batch (an epoch's last) has no rows left for it."""
    rows = slice(rank * per_rank, (rank + 1) * per_rank)
    mask = batch["attention_mask"][rows]
    if mask.shape[0] == 0:
        return None
    width = int(mask.sum(dim=1).max())
    labels = batch["labels"][rows]
    return {"input_ids": batch["input_ids"][rows, :width], "attention_mask": mask[:, :width],
            "labels": labels[:, :width] if labels.dim() == 2 else labels}


class SharedStop:
    """The run's reporter on every rank: rank 0's real one, a NullReporter elsewhere; `should_stop` is rank 0's
    answer on every rank (one broadcast a step, which the loop asks on all ranks at the same point)."""

    def __init__(self, reporter: Reporter):
        self.reporter = reporter if dist.get_rank() == 0 else NullReporter()

    def on_step(self, *args, **kwargs):
        self.reporter.on_step(*args, **kwargs)

    def on_eval(self, metrics):
        self.reporter.on_eval(metrics)

    def on_log(self, message):
        self.reporter.on_log(message)

    def should_stop(self) -> bool:
        flag = torch.tensor([1 if self.reporter.should_stop() else 0], device=_collective_device())
        dist.broadcast(flag, src=0)
        return bool(flag.item())


def _collective_device() -> str:
    return "cuda" if dist.get_backend() == "nccl" else "cpu"


# --- one rank ----------------------------------------------------------------------------------------------------

def check_data_parallel(config: TrainConfig, processes: int) -> None:
    if not isinstance(processes, int) or processes < 1:
        raise ConfigError(f"processes must be a whole number of at least 1, not {processes!r}", "processes")
    if processes > 1 and config.method != "sft":
        raise ConfigError(f"processes: data-parallel training runs sft jobs; {config.method} jobs train in one "
                          "process (set processes to 1)", "processes")


def run_rank(config: TrainConfig, reporter: Reporter | None, *, rank: int, world: int, local_rank: int = 0,
             timeout_s: float = DEFAULT_TIMEOUT_S, store: dist.Store | None = None, others_alive=None) -> dict:
    """Train as rank `rank` of `world`, meeting the others through `store`, or at MASTER_ADDR:MASTER_PORT (the
    environment's, as torchrun sets them) when None. `others_alive()`: False once a rank this process started
    has died, so a rank that dies before the meeting is not waited for."""
    check_data_parallel(config, world)
    device = pick_device(config.device)
    if device == "cuda":
        torch.cuda.set_device(local_rank)
    if store is None:
        store = rendezvous_store(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), rank, world)
    # Meet under the store's (longer) timeout first: a rank still importing torch is not a dead one, and the
    # process group's own connecting counts against the collective timeout.
    _meet(store, rank, world, others_alive or (lambda: True))
    dist.init_process_group("nccl" if device == "cuda" else "gloo", store=store, rank=rank, world_size=world,
                            timeout=timedelta(seconds=timeout_s))
    try:
        return train(config, reporter, mixins=(DataParallel,))
    finally:
        dist.destroy_process_group()


def _meet(store: dist.Store, rank: int, world: int, others_alive) -> None:
    store.set(f"{ARRIVED}{rank}", "1")
    keys = [f"{ARRIVED}{other}" for other in range(world)]
    deadline = time.monotonic() + RENDEZVOUS_TIMEOUT_S
    while True:
        try:
            store.wait(keys, timedelta(seconds=MEET_POLL_S))
            return
        except dist.DistStoreError:
            if not others_alive():
                raise ProcessLost("a process of this run died before it met the others") from None
            if time.monotonic() > deadline:
                raise ProcessLost(f"the processes of this run did not all start within {RENDEZVOUS_TIMEOUT_S} s") \
                    from None


def main(argv: list[str] | None = None) -> int:
    """A rank that the launcher started: `python -m trainer.distributed CONFIG_JSON`, rendezvous in the env."""
    argv = sys.argv[1:] if argv is None else argv
    config = TrainConfig.from_dict(json.loads(argv[0]))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    try:
        run_rank(config, None, rank=rank, world=world, local_rank=int(os.environ.get("LOCAL_RANK", rank)),
                 timeout_s=float(os.environ.get("LORAWORKS_COLLECTIVE_TIMEOUT_S", DEFAULT_TIMEOUT_S)))
    except TrainerError as error:
        print(f"rank {rank}: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # the peers went away (or this rank broke): say so in one line, exit nonzero
        print(f"rank {rank}: stopped: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


# --- the launcher ------------------------------------------------------------------------------------------------

def train_data_parallel(config: TrainConfig, reporter: Reporter | None = None, *, processes: int,
                        timeout_s: float = DEFAULT_TIMEOUT_S, on_start=None) -> dict:
    """Train `config` on `processes` processes: rank 0 here (with `reporter`), the others as children; returns
    rank 0's metrics. One process is plain `train`. `on_start(pids)` gets the other ranks' process ids."""
    check_data_parallel(config, processes)
    if processes == 1:
        return train(config, reporter)
    config.check()
    store = rendezvous_store("127.0.0.1", 0, 0, processes)  # port 0: the system picks a free one
    rendezvous = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(store.port), "WORLD_SIZE": str(processes),
                  "LORAWORKS_COLLECTIVE_TIMEOUT_S": str(timeout_s)}
    payload = json.dumps(config.to_dict())
    children = {rank: subprocess.Popen([sys.executable, "-m", "trainer.distributed", payload],
                                       env={**os.environ, **rendezvous, "RANK": str(rank), "LOCAL_RANK": str(rank)})
                for rank in range(1, processes)}
    if on_start:
        on_start([child.pid for child in children.values()])
    try:
        metrics = run_rank(config, reporter, rank=0, world=processes, timeout_s=timeout_s, store=store,
                           others_alive=lambda: all(child.poll() is None for child in children.values()))
    except ProcessLost as lost:
        message = _lost_message(children, processes, timeout_s, lost)
        _end(children, wait_s=0)
        raise ProcessLost(message) from lost
    except TrainerError:
        _end(children, wait_s=0)
        raise
    except BaseException as error:
        message = _lost_message(children, processes, timeout_s, error)
        _end(children, wait_s=0)
        if isinstance(error, Exception):
            raise ProcessLost(message) from error
        raise
    _end(children, wait_s=EXIT_WAIT_S)
    failed = {rank: child.returncode for rank, child in children.items() if child.returncode}
    if failed:
        raise ProcessLost(f"rank 0 finished but {_how_ended(failed)}; the adapter in the output folder is rank "
                          "0's and complete")
    return metrics


def rendezvous_store(host: str, port: int, rank: int, world: int) -> dist.TCPStore:
    """Where the ranks meet: rank 0 serves it (unless torchrun's agent already does), the others connect."""
    serves = rank == 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True"
    return dist.TCPStore(host, port, world, is_master=serves, timeout=timedelta(seconds=RENDEZVOUS_TIMEOUT_S),
                         wait_for_workers=False)


def _lost_message(children: dict, processes: int, timeout_s: float, error: BaseException) -> str:
    deadline = time.monotonic() + DEATH_WAIT_S
    while time.monotonic() < deadline and not any(child.poll() not in (None, 0) for child in children.values()):
        time.sleep(0.1)
    dead = {rank: child.returncode for rank, child in children.items() if child.poll() not in (None, 0)}
    what = (_how_ended(dead) if dead else
            f"a collective between the {processes} processes failed or waited over {timeout_s:g} s "
            f"({type(error).__name__}: {error})")
    return (f"data-parallel training stopped: {what}. The job's last checkpoint is kept; resume it to continue "
            "from there")


def _how_ended(codes: dict[int, int]) -> str:
    def one(rank, code):
        return (f"rank {rank} was killed by {signal.Signals(-code).name}" if code < 0
                else f"rank {rank} exited with status {code}")
    return ", ".join(one(rank, code) for rank, code in sorted(codes.items()))


def _end(children: dict, wait_s: float) -> None:
    """Give the other ranks `wait_s` to end on their own (after a run they finish right after rank 0's last
    collective; after a failure they are not waited for), then kill any left."""
    deadline = time.monotonic() + wait_s
    for child in children.values():
        try:
            child.wait(timeout=max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


if __name__ == "__main__":
    raise SystemExit(main())
