"""The jobs app's tunables, read from the environment once (with safe local defaults).

JOB_HEARTBEAT_INTERVAL_S  how often a running job's worker proves it is alive (database + Redis lease)
JOB_HEARTBEAT_TIMEOUT_S   no heartbeat for this long: the job's worker is presumed lost (resumed, or failed)
JOB_MAX_RESUMES           how many times a job is resumed after losing its worker before it is failed instead
JOB_CHECKPOINT_EVERY      optimizer steps between checkpoints uploaded to storage (what a resume starts from)
JOB_PROGRESS_DB_INTERVAL_S  the worker writes progress to the database at most this often (Redis gets every step)
JOB_REQUEUE_AFTER_S       a job waiting this long whose task message is gone from the broker is sent again
JOB_WORK_DIR              local scratch folder where workers train (default: $VAR_DIR/work)
JOB_COLLECTIVE_TIMEOUT_S  a data-parallel job's processes wait this long for each other before the job stops
"""
from django.conf import settings

from webapp.env import env_int, env_str

HEARTBEAT_INTERVAL_S = env_int("JOB_HEARTBEAT_INTERVAL_S", 5, minimum=1, maximum=3600)
HEARTBEAT_TIMEOUT_S = env_int("JOB_HEARTBEAT_TIMEOUT_S", 120, minimum=3, maximum=7 * 24 * 3600)
MAX_RESUMES = env_int("JOB_MAX_RESUMES", 2, minimum=0, maximum=100)
CHECKPOINT_EVERY = env_int("JOB_CHECKPOINT_EVERY", 50, minimum=1, maximum=1_000_000)
REQUEUE_AFTER_S = env_int("JOB_REQUEUE_AFTER_S", 120, minimum=3, maximum=7 * 24 * 3600)
COLLECTIVE_TIMEOUT_S = env_int("JOB_COLLECTIVE_TIMEOUT_S", 1800, minimum=5, maximum=7 * 24 * 3600)
PROGRESS_DB_INTERVAL_S = env_int("JOB_PROGRESS_DB_INTERVAL_S", 2, minimum=1, maximum=600)


def work_dir():
    from pathlib import Path

    return Path(env_str("JOB_WORK_DIR", str(settings.VAR_DIR / "work")))
