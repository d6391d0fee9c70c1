"""A job's priority (low, normal, high) and what it means to the broker and to the queue position.

Celery's Redis transport keeps one list per priority step (0, 3, 6, 9) for each queue and a worker takes from the
lowest-numbered non-empty list first, FIFO within a list; so a waiting high job starts before any normal one, and
normal before low. Every train task is sent with its job's priority (webapp.jobs.queue.send): a message sent
without one would land in step 0 and jump the queue. A team cannot use priority to take more than its share:
its running- and queued-job quotas (webapp.teams.quotas) bound how many of its jobs hold workers or wait.
"""
from django.db.models import Q

from webapp.jobs.state_names import HIGH, LOW, NORMAL, PRIORITIES  # noqa: F401 - callers read the names here

BROKER_PRIORITY = {HIGH: 0, NORMAL: 3, LOW: 6}  # kombu's Redis steps: 0 is served first


def broker_priority(level: str) -> int:
    return BROKER_PRIORITY.get(level, BROKER_PRIORITY[NORMAL])


def ahead_of(job) -> Q:
    """The waiting jobs the broker hands out before `job`: a higher priority, or its own queued earlier."""
    higher = [level for level, step in BROKER_PRIORITY.items() if step < broker_priority(job.priority)]
    same_earlier = Q(queued_at__lt=job.queued_at) | Q(queued_at=job.queued_at, pk__lt=job.pk)
    return Q(priority__in=higher) | (Q(priority=job.priority) & same_earlier)
