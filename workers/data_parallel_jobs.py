"""A training job on all of its worker's GPUs, and its resumption when one of their processes is lost.

`train_on_processes` runs the job's config as WORKER_GPUS torch.distributed processes (trainer.distributed; one
process for methods other than SFT, and on a one-GPU worker). A lost process (killed, or silent past
JOB_COLLECTIVE_TIMEOUT_S) ends that attempt with ProcessLost; the job then continues from its newest local
checkpoint in new processes, counted as a resume like a lost worker's, until it has been resumed JOB_MAX_RESUMES
times. Like the task modules, it imports `trainer` inside its function only.
"""
from __future__ import annotations

from pathlib import Path

from webapp.jobs import conf, states
from workers import capacity
from workers.progress import JobReporter


def train_on_processes(job, config, reporter: JobReporter, tracked) -> dict:
    """Train on this worker's WORKER_GPUS processes (rank 0 here, reporting to `tracked`, the job's reporter as the
    tracker sees it: progress, cancel and the heartbeat work as for one). A lost process stops the run; it then
    continues from its last checkpoint, as after a lost worker, until the job has been resumed JOB_MAX_RESUMES
    times."""
    from trainer.checkpoint import latest_checkpoint
    from trainer.distributed import train_data_parallel
    from trainer.errors import ProcessLost

    processes = capacity.processes_per_job()
    if processes > 1 and config.method != "sft":
        reporter.on_log(f"{config.method} jobs train in one process: this worker's other {processes - 1} stay idle")
        processes = 1
    while True:
        try:
            return train_data_parallel(config, tracked, processes=processes, timeout_s=conf.COLLECTIVE_TIMEOUT_S)
        except ProcessLost as lost:
            resumes = states.resume_count(job)
            if resumes >= conf.MAX_RESUMES:
                raise ProcessLost(f"{lost}; the job was already resumed {resumes} time(s), so it is not resumed "
                                  "again") from lost
            newest = latest_checkpoint(Path(config.out) / "checkpoints")
            step = int(newest.name.rsplit("-", 1)[-1]) if newest else 0
            reporter.resume_from(step)
            reporter.on_log(f"{lost}: resuming from the checkpoint at step {step}" if step
                            else f"{lost}: starting again from the beginning (no checkpoint yet)")
            try:
                states.move(job, states.RUNNING, reason=f"resumed after a training process was lost: {lost}")
            except states.TransitionRefused:  # cancelled meanwhile: nothing to resume
                raise lost from None
            config.resume = True
