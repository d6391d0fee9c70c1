"""Which jobs use a dataset, and the messages that say so when a delete is refused.

A dataset cannot be deleted while a job that trains or evaluates on it is active (validating, queued, running);
jobs keep a protected reference to their datasets, so finished jobs that used it keep it too.
"""
from django.db.models import Q

from webapp.jobs import states
from webapp.jobs.models import Job


def jobs_using(dataset):
    return Job.objects.filter(Q(dataset=dataset) | Q(eval_dataset=dataset), team=dataset.team).order_by("pk")


def active_jobs_using(dataset) -> list:
    return list(jobs_using(dataset).filter(state__in=states.ACTIVE))


def refusal_message(dataset, jobs: list, why: str = "active") -> str:
    names = ", ".join(f"“{job.name}” ({job.state})" for job in jobs[:5]) + (" …" if len(jobs) > 5 else "")
    verb = "uses" if len(jobs) == 1 else "use"
    return (f"“{dataset.name}” cannot be deleted: {len(jobs)} {why} job{'s' if len(jobs) > 1 else ''} {verb} it "
            f"({names}). " + ("Cancel them or wait for them to finish." if why == "active"
                              else "Delete those jobs first."))
