"""The one place that limits what a request can see to its current team.

Every view and API endpoint that touches a team's objects goes through `team_queryset` or `get_team_object_or_404`;
another team's object is a 404, never a 403, so its existence is not revealed.
"""
from django.core.exceptions import ValidationError
from django.db.models import Model, QuerySet
from django.http import Http404


def team_queryset(request, model_or_queryset: type[Model] | QuerySet) -> QuerySet:
    queryset = model_or_queryset if isinstance(model_or_queryset, QuerySet) else model_or_queryset.objects.all()
    team = getattr(request, "team", None)
    if team is None:
        return queryset.none()
    return queryset.filter(team=team)


def get_team_object_or_404(request, model_or_queryset, **lookup):
    queryset = team_queryset(request, model_or_queryset)
    try:
        return queryset.get(**lookup)
    except (queryset.model.DoesNotExist, ValueError, TypeError, ValidationError):
        raise Http404("not found") from None
