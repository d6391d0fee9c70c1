"""How much artifact storage a team uses: its datasets' files (sizes recorded at upload) and its jobs' files
under `jobs/<id>/` (adapters, merged models, checkpoints, metrics), measured in storage itself."""
from __future__ import annotations

from django.core.files.storage import default_storage
from django.db.models import Sum

from webapp.datasets.models import Dataset
from webapp.jobs.models import Job
from webapp.jobs.storage import job_prefix
from webapp.results.artifacts import walk


def team_storage(team) -> dict:
    """{"datasets", "dataset_bytes", "jobs", "job_bytes", "total_bytes"} for `team`."""
    datasets = Dataset.objects.filter(team=team).aggregate(size=Sum("size_bytes"), eval_size=Sum("eval_size_bytes"))
    dataset_bytes = (datasets["size"] or 0) + (datasets["eval_size"] or 0)
    job_ids = list(Job.objects.filter(team=team).values_list("pk", flat=True))
    job_bytes = sum(default_storage.size(stored) for pk in job_ids for _, stored in walk(job_prefix(pk)))
    return {"datasets": Dataset.objects.filter(team=team).count(), "dataset_bytes": dataset_bytes,
            "jobs": len(job_ids), "job_bytes": job_bytes, "total_bytes": dataset_bytes + job_bytes}
