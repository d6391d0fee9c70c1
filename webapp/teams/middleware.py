"""Sets `request.team` (the signed-in user's current team) and `request.membership` on every request.

The current team is kept in the session; if it is missing or the user left that team, the first team the user
belongs to is used. Anonymous users and users without a team get None.
"""
from webapp.teams.models import Membership

SESSION_KEY = "team_id"


def current_membership(request):
    if not request.user.is_authenticated:
        return None
    memberships = Membership.objects.filter(user=request.user).select_related("team")
    chosen = request.session.get(SESSION_KEY)
    membership = memberships.filter(team_id=chosen).first() if chosen else None
    return membership or memberships.order_by("team__name").first()


class CurrentTeamMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        membership = current_membership(request)
        request.membership = membership
        request.team = membership.team if membership else None
        return self.get_response(request)
