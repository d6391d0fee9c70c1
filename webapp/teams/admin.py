"""Django admin for teams and memberships."""
from django.contrib import admin

from webapp.jobs.admin import ReadOnlyAdmin
from webapp.teams.models import Membership, MonthlyUsage, Team


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    autocomplete_fields = ["user"]


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "max_running_jobs", "max_queued_jobs", "gpu_hours_per_month",
                    "max_storage_bytes", "created_at"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]
    fieldsets = [(None, {"fields": ["name", "slug"]}),
                 ("Quotas (empty: no limit)", {"fields": ["max_running_jobs", "max_queued_jobs",
                                                          "gpu_hours_per_month", "max_storage_bytes"]})]


@admin.register(MonthlyUsage)
class MonthlyUsageAdmin(ReadOnlyAdmin):  # written by the workers' accounting only (webapp.teams.usage)
    list_display = ["team", "month", "gpu_seconds"]
    list_filter = ["team"]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "team", "role", "joined_at"]
    list_filter = ["role", "team"]
    search_fields = ["user__username", "team__name"]
