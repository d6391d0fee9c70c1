"""Django admin for datasets: browse every team's datasets and their validation outcome (read-mostly)."""
from django.contrib import admin

from webapp.datasets.models import Dataset


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ["name", "team", "status", "format", "task", "rows", "size_bytes", "created_by", "created_at"]
    list_filter = ["status", "format", "team"]
    search_fields = ["name", "original_filename", "team__name"]
    readonly_fields = ["file", "eval_file", "size_bytes", "eval_size_bytes", "status", "format", "task", "rows",
                       "report", "error", "progress", "revision", "validated_at", "created_at"]
