"""The operations page for staff (workers, queues, Redis, database, storage) and the web process's health
endpoint for load balancers and compose (`/healthz`: 200 when the database and Redis answer, else 503)."""
from django.contrib.auth.decorators import login_required, user_passes_test
from django.core.exceptions import PermissionDenied
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from webapp.jobs import routing, states
from webapp.jobs.models import Job
from webapp.ops import checks


def _staff(user) -> bool:
    if not user.is_staff:
        raise PermissionDenied("the operations page is for staff")
    return True


def _job_ids(active: list[dict]) -> list[int]:
    return [task["args"][0] for task in active if task.get("args") and isinstance(task["args"][0], int)]


@login_required
@user_passes_test(_staff)
@require_GET
@never_cache
def status(request):
    workers = checks.workers()
    jobs = Job.objects.in_bulk([pk for answer in workers.values() for pk in _job_ids(answer.get("active", []))])
    rows = [{"name": name, **answer, "jobs": [jobs[pk] for pk in _job_ids(answer.get("active", [])) if pk in jobs]}
            for name, answer in workers.items()]
    served = {queue for answer in workers.values() for queue in answer.get("queues", [])}
    return render(request, "ops/status.html", {
        "workers": rows,
        "queues": [{"name": name, "waiting": waiting, "served": name in served}
                   for name, waiting in checks.queue_lengths(_class_queues(workers)).items()],
        "database": checks.database(),
        "redis": checks.redis_server(),
        "storage": checks.artifact_storage(),
    })


def _class_queues(workers: dict) -> tuple[str, ...]:
    """The queues of the worker classes that live workers serve or queued jobs wait for (webapp.jobs.routing)."""
    waiting = Job.objects.filter(state=states.QUEUED).exclude(worker_class="").values_list("worker_class", flat=True)
    return tuple(sorted({routing.queue_for(name) for name in {*routing.classes_of(workers), *waiting}}))


@require_GET
@never_cache
def healthz(request):
    database, redis_server = checks.database(), checks.redis_server()
    healthy = database["ok"] and redis_server["ok"]
    return JsonResponse({"status": "ok" if healthy else "unavailable", "database": database["ok"],
                         "redis": redis_server["ok"]}, status=200 if healthy else 503)
