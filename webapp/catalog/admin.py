"""Admin for the catalog: add a base model by Hugging Face id or local folder; a worker inspects it."""
from django.contrib import admin, messages

from webapp.catalog.inspection import request_inspection
from webapp.catalog.models import BaseModel


@admin.register(BaseModel)
class BaseModelAdmin(admin.ModelAdmin):
    list_display = ["name", "source", "is_demo", "status", "architecture", "updated_at"]
    list_filter = ["status", "is_demo"]
    search_fields = ["name", "source"]
    fields = ["name", "source", "description", "is_demo", "status", "error", "architecture", "model_type",
              "task_types", "info"]
    readonly_fields = ["status", "error", "architecture", "model_type", "task_types", "info"]
    actions = ["inspect_again"]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if not change or "source" in form.changed_data:
            request_inspection(obj)
            self.message_user(request, f"{obj.source} is being inspected by a worker; reload to see the result.")

    @admin.action(description="Inspect again")
    def inspect_again(self, request, queryset):
        for entry in queryset:
            request_inspection(entry)
        self.message_user(request, f"{queryset.count()} model(s) queued for inspection.", messages.INFO)
