"""The settings page: a person's API tokens, creating one (its secret shown once) and revoking one.

Creating answers with a redirect (POST-redirect-GET), so reloading the page never creates a second token: the new
secret waits in the session for that one GET, which takes it out.
"""
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from webapp.accounts.forms import NewTokenForm
from webapp.accounts.models import ApiToken
from webapp.accounts.tokens import issue_token, revoke
from webapp.audit.record import Action, record


NEW_SECRET_KEY = "new_api_token_secret"


@login_required
def settings_page(request):
    form = NewTokenForm(request.POST or None, user=request.user, initial={"team": request.team})
    if request.method == "POST" and form.is_valid():
        token, secret = issue_token(request.user, form.cleaned_data["team"], form.cleaned_data["name"])
        request.session[NEW_SECRET_KEY] = secret
        record(request, Action.TOKEN_CREATED, token.team, f"token {token.name} ({token.prefix}…)")
        messages.success(request, f"Created token {token.name}. Copy it now: it is not shown again.")
        return redirect("accounts:settings")
    new_secret = request.session.pop(NEW_SECRET_KEY, None) if request.method == "GET" else None
    tokens = ApiToken.objects.filter(user=request.user).select_related("team")
    return render(request, "accounts/settings.html", {"form": form, "tokens": tokens, "new_secret": new_secret})


@login_required
@require_POST
def revoke_token(request, token_id: int):
    # Tokens are personal: only their owner sees or revokes them, whatever the current team.
    token = get_object_or_404(ApiToken, pk=token_id, user=request.user)
    revoke(token)
    record(request, Action.TOKEN_REVOKED, token.team, f"token {token.name} ({token.prefix}…)")
    messages.success(request, f"Revoked token {token.name}; scripts using it are refused from now on.")
    return redirect("accounts:settings")
