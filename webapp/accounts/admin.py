"""Django admin for API tokens: list and revoke, never show or edit a secret."""
from django.contrib import admin

from webapp.accounts.models import ApiToken
from webapp.accounts.tokens import revoke
from webapp.audit.record import Action, record


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "user", "team", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["team"]
    search_fields = ["name", "prefix", "user__username"]
    readonly_fields = ["token_hash", "prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke_selected"]

    @admin.action(description="Revoke selected tokens")
    def revoke_selected(self, request, queryset):
        for token in queryset:
            revoke(token)
            record(request, Action.TOKEN_REVOKED, token.team, f"token {token.name} ({token.prefix}…) by an admin")
