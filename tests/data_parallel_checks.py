"""What the data-parallel job tests (tests/workers/test_data_parallel_jobs.py, the browser's
tests/e2e/test_data_parallel_browser.py) share: a worker declared with WORKER_GPUS=2, and the check that a job's
adapter is the one the same job trains in one process with the whole batch (ATOL is justified in
tests/trainer/test_distributed.py)."""
import os

import torch

from worker_process import WorkerProcess

ATOL = 1e-5
CLASS = "two-gpus"


def two_gpu_worker(base_env: dict, log_path) -> WorkerProcess:
    """A started worker of class two-gpus that trains each job on 2 processes of one thread (OMP_NUM_THREADS=1)."""
    env = {**base_env, "WORKER_GPUS": "2", "OMP_NUM_THREADS": "1"}
    return WorkerProcess(env, log_path, queues=f"train.{CLASS}", concurrency=1,
                         name=f"{CLASS}-{os.getpid()}@localhost").start()


def adapter_of(job) -> dict[str, torch.Tensor]:
    from django.core.files.storage import default_storage
    from safetensors.torch import load

    with default_storage.open(f"{job.artifacts['adapter']}adapter_model.safetensors") as handle:
        return load(handle.read())


def one_process_adapter(job, folder) -> dict[str, torch.Tensor]:
    """`job` trained here in one process on twice its batch: a twin row with the same model, data (from storage)
    and settings but batch_size x 2, through the config the worker builds (workers.training_tasks.train_config)."""
    from jobs_helpers import make_job
    from safetensors.torch import load_file

    from trainer.train import train
    from workers.training_tasks import train_config

    twin = make_job(job.team, job.base_model, job.dataset, name="one process", state="cancelled",
                    settings={**job.settings, "batch_size": job.settings["batch_size"] * 2})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(train_config(twin, folder, resume=False))
    finally:
        torch.set_num_threads(threads)
    return load_file(str(folder / "out" / "adapter" / "adapter_model.safetensors"))


def assert_same_adapter(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys() and got
    assert max(float((got[k] - expected[k]).abs().max()) for k in got) < ATOL
    assert max(float(t.abs().max()) for k, t in expected.items() if "lora_B" in k) > 1000 * ATOL  # it trained
