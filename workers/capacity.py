"""What a training worker offers a job, advertised in its `health` answer (workers.ops_tasks): its memory, so the
job form and the API can refuse a job that will not fit its worker class (webapp.jobs.memory_check,
trainer.estimate), and the GPUs (processes) and machines it trains each job on (WORKER_GPUS, WORKER_NODES).

    WORKER_MEMORY_MB set    that many MB, on the device the worker trains on (a GPU when nvidia-smi sees one)
    a GPU                   the first GPU's total memory, as nvidia-smi reports it (the worker's main process
                            answers health checks and never loads torch)
    no GPU                  the machine's RAM
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess

from celery.signals import worker_init, worker_ready
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

NVIDIA_SMI_TIMEOUT_S = 5


@functools.cache
def capacity() -> dict:
    """{"device": "cuda" | "cpu", "memory_bytes": int (per GPU), "gpus": int, "nodes": int}, measured once per
    process."""
    gpu_bytes = _first_gpu_bytes()
    device = "cuda" if gpu_bytes else "cpu"
    memory = settings.WORKER_MEMORY_MB * 1024 * 1024 if settings.WORKER_MEMORY_MB else gpu_bytes or _ram_bytes()
    return {"device": device, "memory_bytes": memory, "gpus": processes_per_job(), "nodes": settings.WORKER_NODES}


def processes_per_job() -> int:
    """The processes each training job runs on here (WORKER_GPUS); refuses a worker declared on several machines."""
    if settings.WORKER_NODES != 1:
        raise ImproperlyConfigured(f"WORKER_NODES={settings.WORKER_NODES}: a job trains on one machine for now "
                                   f"(WORKER_GPUS processes on it); set WORKER_NODES=1")
    return settings.WORKER_GPUS


@worker_init.connect
def _refuse_several_machines(**_) -> None:
    """Stop the worker before it takes a job (Celery only logs other errors of this signal)."""
    try:
        processes_per_job()
    except ImproperlyConfigured as error:
        raise SystemExit(f"error: {error}") from None


@worker_ready.connect
def _measure_at_start(**_) -> None:
    capacity()  # nvidia-smi can take seconds: not while a health check waits for the answer


def _first_gpu_bytes() -> int:
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S)
        return int(done.stdout.split()[0]) * 1024 * 1024 if done.returncode == 0 and done.stdout.strip() else 0
    except (OSError, subprocess.SubprocessError, ValueError):
        return 0


def _ram_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
