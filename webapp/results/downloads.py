"""Downloads of a finished job, checked against the request's team and streamed from storage: the adapter as a
zip in PEFT layout with a README model card, the merged model as a zip, and metrics.json."""
from django.contrib.auth.decorators import login_required
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, StreamingHttpResponse
from django.utils.text import slugify

from webapp.audit.record import Action, describe, record
from webapp.jobs import states
from webapp.jobs.models import Job
from webapp.results.artifacts import has_files, walk
from webapp.results.model_card import model_card
from webapp.results.zips import stream_zip
from webapp.teams.scoping import get_team_object_or_404

KINDS = ("adapter", "merged", "metrics")


def stem(job, kind: str) -> str:
    """File and folder name of a download: loraworks-<id>-<name>-<kind>."""
    return f"loraworks-{job.pk}-{slugify(job.name)[:40] or 'job'}-{kind}"


def _zip_response(entries, filename: str) -> StreamingHttpResponse:
    response = StreamingHttpResponse(stream_zip(entries), content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "private, no-store"
    return response


@login_required
def download(request, job_id: int, kind: str):
    job = get_team_object_or_404(request, Job.objects.select_related("base_model", "dataset"), pk=job_id)
    artifacts = job.artifacts or {}
    if kind not in KINDS or not (job.state == states.SUCCEEDED or (kind == "adapter" and job.has_adapter)):
        raise Http404("no such download")
    folder = stem(job, kind)
    if kind == "metrics":
        name = artifacts.get("metrics")
        if not name or not default_storage.exists(name):
            raise Http404("this job has no metrics.json")
        _record(request, job, kind)
        return FileResponse(default_storage.open(name, "rb"), as_attachment=True, filename=f"{folder}.json",
                            content_type="application/json")
    prefix = artifacts.get(kind)
    if not has_files(prefix):
        raise Http404(f"this job has no {kind} model files")
    entries = [(f"{folder}/{relative}", stored) for relative, stored in walk(prefix) if relative != "README.md"]
    entries.append((f"{folder}/README.md", model_card(job, folder, kind).encode()))
    _record(request, job, kind)
    return _zip_response(entries, f"{folder}.zip")


def _record(request, job, kind: str) -> None:
    record(request, Action.DOWNLOAD, job.team, f"{kind} of {describe('job', job)}")

