"""The audit log in the Django admin: every team's rows, read-only, filterable by action and team."""
from django.contrib import admin

from webapp.audit.models import AuditEvent
from webapp.jobs.admin import ReadOnlyAdmin


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["at", "team", "username", "action", "target", "ip", "via"]
    list_filter = ["action", "via", "team"]
    search_fields = ["username", "target", "ip"]
    list_select_related = ["team"]
    date_hierarchy = "at"
