"""Sets `request.team` (the signed-in user's current team) and `request.my_teams` (every team the user belongs to,
by name, for the team switcher) on every request, from one query.

The current team is kept in the session; if it is missing or the user left that team, the first team the user
belongs to is used. Anonymous users and users without a team get None (and no teams).
"""
from webapp.teams.models import Team

SESSION_KEY = "team_id"


def teams_of(request) -> list[Team]:
    """The signed-in user's teams, by name ([] for an anonymous user)."""
    if not request.user.is_authenticated:
        return []
    return list(Team.objects.filter(members=request.user))


def current_team(request, teams: list[Team]) -> Team | None:
    chosen = request.session.get(SESSION_KEY) if teams else None
    return next((team for team in teams if team.pk == chosen), teams[0] if teams else None)


class CurrentTeamMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.my_teams = teams_of(request)
        request.team = current_team(request, request.my_teams)
        return self.get_response(request)
