"""Django admin for jobs and their history: browse every team's jobs, read-only.

A job's state moves only through webapp.jobs.states (which records the JobEvent) and a job is created only through
the form or the API (which enqueue it), so the admin neither adds nor edits nor deletes jobs or events.
"""
from django.contrib import admin

from webapp.jobs.models import Job, JobEvent


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class JobEventInline(admin.TabularInline):
    model = JobEvent
    fields = ["at", "from_state", "to_state", "reason"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Job)
class JobAdmin(ReadOnlyAdmin):
    list_display = ["name", "team", "state", "priority", "task", "base_model", "worker_class", "worker_name",
                    "gpu_seconds", "created_at", "finished_at"]
    list_filter = ["state", "priority", "task", "team"]
    search_fields = ["name", "team__name", "worker_name"]
    list_select_related = ["team", "base_model"]
    inlines = [JobEventInline]


@admin.register(JobEvent)
class JobEventAdmin(ReadOnlyAdmin):
    list_display = ["job", "from_state", "to_state", "reason", "at"]
    list_filter = ["to_state"]
    search_fields = ["job__name", "reason"]
    list_select_related = ["job"]
