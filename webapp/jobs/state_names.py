"""The names of a job's states (and of its tasks), which the Job model's fields are made of.

Only names live here, so that the model can use them without importing the state machine that writes its rows:
the allowed moves and `move` are in webapp.jobs.states, which re-exports these names for every other caller.
"""
VALIDATING, QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    "validating", "queued", "running", "succeeded", "failed", "cancelled")
CHOICES = [(s, s.capitalize()) for s in (VALIDATING, QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)]
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})
ACTIVE = frozenset({VALIDATING, QUEUED, RUNNING})
TASKS = ("causal-lm", "classification")
LOW, NORMAL, HIGH = "low", "normal", "high"
PRIORITIES = (LOW, NORMAL, HIGH)
