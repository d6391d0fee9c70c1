"""The team's home page: its jobs in progress (their bars follow the jobs' progress feeds), recent results with
their headline metric, its datasets, and a three-step start while the team has nothing yet."""
from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from webapp.datasets.models import Dataset
from webapp.jobs import states
from webapp.jobs.models import Job
from webapp.results.summary import headline
from webapp.teams.scoping import team_queryset

SHOWN = 5


@login_required
def dashboard(request):
    jobs = team_queryset(request, Job).select_related("base_model", "dataset")
    active = list(jobs.filter(state__in=states.ACTIVE)[:SHOWN])
    finished = list(jobs.filter(state__in=states.TERMINAL).order_by("-finished_at", "-pk")[:SHOWN])
    datasets = list(team_queryset(request, Dataset)[:SHOWN])
    context = {"team": request.team, "active": active, "datasets": datasets,
               "finished": [(job, headline(job)) for job in finished],
               "empty": not (active or finished or datasets)}
    return render(request, "dashboard/home.html", context)
