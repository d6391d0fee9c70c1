"""Errors the engine raises for problems a person can act on.

Each carries a message written for the person running the job (what is wrong, where, what to change),
never a traceback. Callers show `str(error)` as is.
"""


class TrainerError(Exception):
    """Base class: a problem with the job's inputs or resources, explained in its message."""


class ConfigError(TrainerError):
    """A setting is out of range or inconsistent; `field` names it."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class DataError(TrainerError):
    """The dataset cannot be used (unreadable, empty after validation, wrong format)."""


class TargetError(TrainerError):
    """LoRA target modules matched nothing; the message lists the linear modules available."""


class ModelNotFoundError(TrainerError):
    """The base model is neither a local folder nor in the Hugging Face cache, and the hub is unreachable."""


class OutOfMemoryError(TrainerError):
    """Training ran out of memory; the message says which settings to lower."""


class ProcessLost(TrainerError):
    """A process of a data-parallel run died or stopped answering (trainer.distributed); the run's last
    checkpoint is kept, so the job can resume."""
