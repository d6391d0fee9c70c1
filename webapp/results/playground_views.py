"""The playground: the page, the request that queues an `infer` task, and the server-sent event stream of its
answer (relayed from the Redis list the worker fills; protocol in webapp.results.playground)."""
import json

from django.contrib.auth.decorators import login_required
from django.http import Http404, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_POST

from webapp.results import playground as protocol
from webapp.results.forms import PlaygroundForm
from webapp.results.views import finished_jobs

KEEPALIVE_S = 1.0


@login_required
def playground(request):
    jobs = finished_jobs(request)
    chosen = jobs.filter(pk=request.GET.get("job")).first() if request.GET.get("job", "").isdigit() else None
    form = PlaygroundForm(jobs, initial={"job": chosen or jobs.first()})
    return render(request, "results/playground.html",
                  {"form": form, "jobs": jobs,
                   "sampling_fields": [form[name] for name in ("temperature", "top_p", "max_new_tokens", "seed")], "tasks": {job.pk: job.task for job in jobs},
                   "limits": protocol.limits()})


@login_required
@require_POST
def playground_run(request):
    form = PlaygroundForm(finished_jobs(request), request.POST)
    if not form.is_valid():
        return JsonResponse({"errors": {field: [str(e) for e in errors] for field, errors in form.errors.items()}},
                            status=400)
    job = form.cleaned_data["job"]
    request_id = protocol.new_request_id()
    protocol.redis_client().set(protocol.owner_key(request_id), request.team.pk, ex=protocol.EVENTS_TTL_S)
    sampling = form.sampling()
    protocol.start(request_id, job, form.cleaned_data["prompt"], sampling)
    return JsonResponse({"request_id": request_id, "task": job.task, "seed": sampling["seed"],
                         "stream_url": reverse("results:playground_stream", args=[request_id])}, status=202)


def relay(client, request_id: str, timeout_s: float):
    """The request's events as server-sent events, with a comment line while waiting (keeps proxies open)."""
    yield "retry: 3600000\n\n"  # the answer is consumed once: the browser must not reconnect on its own
    number = 0
    for event in protocol.read_events(client, request_id, timeout_s, wait_s=KEEPALIVE_S):
        if event is None:
            yield ": waiting\n\n"
            continue
        number += 1
        yield f"id: {number}\ndata: {json.dumps(event)}\n\n"


@login_required
def playground_stream(request, request_id: str):
    client = protocol.redis_client()
    owner = client.get(protocol.owner_key(request_id))
    if owner is None or request.team is None or int(owner) != request.team.pk:
        raise Http404("no such playground request")
    response = StreamingHttpResponse(relay(client, request_id, protocol.limits()["stream_timeout_s"]),
                                     content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # a front proxy must pass each event on at once
    return response
