"""Team pages: switch the current team, and a team's page with its members, the storage and GPU-hours it uses
against its quotas, and (for its owners) its audit log, paged."""
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from webapp.audit.models import AuditEvent
from webapp.paging import paged
from webapp.teams.middleware import SESSION_KEY
from webapp.teams.models import Membership, Team
from webapp.teams.quotas import quota_rows
from webapp.teams.storage_usage import team_storage
from webapp.teams.usage import month_of

AUDIT_PER_PAGE = 25


@login_required
@require_POST
def switch_team(request):
    membership = get_object_or_404(Membership, user=request.user, team_id=request.POST.get("team") or 0)
    request.session[SESSION_KEY] = membership.team_id
    messages.success(request, f"Switched to team {membership.team.name}.")
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                           require_https=request.is_secure()):
        target = "dashboard"
    return redirect(target)


@login_required
def team_detail(request, team_id: int):
    # A team's page is visible to its members only; to anyone else it does not exist.
    team = get_object_or_404(Team, pk=team_id, members=request.user)
    memberships = team.memberships.select_related("user").order_by("user__username")
    usage = team_storage(team)
    context = {"team": team, "memberships": memberships, "usage": usage,
               "quotas": quota_rows(team, usage["total_bytes"]), "month": month_of()}
    if memberships.filter(user=request.user, role=Membership.Role.OWNER).exists():
        context["audit"] = paged(request, AuditEvent.objects.filter(team=team), per_page=AUDIT_PER_PAGE)
    return render(request, "teams/detail.html", context)
