"""Worker classes: a job may ask for a kind of training worker (`gpu-large`, `cpu`…), which is a Celery queue.

A class `c` is the queue `train.c`; a job without a class goes to plain `train`. A worker advertises the classes
it serves by the queues it consumes (`celery … worker -Q train,train.gpu-large`), so the classes that exist are
the `train.*` queues of the workers that answer right now (webapp.ops.checks.live_worker_classes). Celery
creates a queue it was not told about on first use (`task_create_missing_queues`, on by default), so a class
needs no configuration.
Each worker's answer also says how much memory it offers a training job (workers.capacity); a class offers what
its smallest live worker does, since any of them may take the job.
"""
from __future__ import annotations

TRAIN_QUEUE = "train"
PREFIX = TRAIN_QUEUE + "."


def queue_for(worker_class: str) -> str:
    return PREFIX + worker_class if worker_class else TRAIN_QUEUE


def classes_of(workers: dict[str, dict]) -> list[str]:
    """The classes served by `workers` ({name: health answer with its "queues"}), sorted."""
    return sorted({name.removeprefix(PREFIX) for answer in workers.values() for name in answer.get("queues", [])
                   if name.startswith(PREFIX) and len(name) > len(PREFIX)})


def class_capacity(workers: dict[str, dict], worker_class: str) -> dict | None:
    """{"device", "memory_bytes"} of the smallest live worker serving `worker_class`; None when none says."""
    offers = [answer["capacity"] for answer in workers.values()
              if queue_for(worker_class) in answer.get("queues", []) and answer.get("capacity")]
    return min(offers, key=lambda offer: offer["memory_bytes"], default=None)
