"""URL routes of the web app."""
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from webapp.dashboard.views import dashboard
from webapp.teams.login_throttle import throttled
from webapp.teams.views import switch_team, team_detail

urlpatterns = [
    path("", dashboard, name="dashboard"),
    path("login/", throttled(auth_views.LoginView.as_view(redirect_authenticated_user=True)), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("teams/switch/", switch_team, name="switch_team"),
    path("teams/<int:team_id>/", team_detail, name="team_detail"),
    path("models/", include("webapp.catalog.urls")),
    path("datasets/", include("webapp.datasets.urls")),
    path("jobs/", include("webapp.jobs.urls")),
    path("", include("webapp.results.urls")),
    path("account/", include("webapp.accounts.urls")),
    path("api/", include("webapp.api.urls")),
    path("v1/", include("webapp.serving.urls")),
    path("", include("webapp.ops.urls")),
    path("admin/", admin.site.urls),
]
