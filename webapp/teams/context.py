"""Template context: the current team and the teams the user can switch to (both set by CurrentTeamMiddleware)."""


def current_team(request):
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"current_team": getattr(request, "team", None), "my_teams": getattr(request, "my_teams", [])}
