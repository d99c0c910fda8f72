from django.contrib import admin
from django.http import HttpRequest

from .models import Dataset, FineTuningJob, JobEvent


class ReadOnlyAdmin(admin.ModelAdmin):
    """Jobs and datasets are users' work: staff can look and delete, not edit."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Dataset)
class DatasetAdmin(ReadOnlyAdmin):
    list_display = ("id", "owner", "filename", "format", "rows", "tokens", "bytes", "created_at")
    list_filter = ("format",)
    search_fields = ("owner__username", "filename")
    # The rows are users' private data: the admin shows figures, not content.
    exclude = ("file", "preview")


class JobEventInline(admin.TabularInline):
    model = JobEvent
    extra = 0
    fields = ("created_at", "kind", "level", "message")
    readonly_fields = fields
    can_delete = False
    ordering = ("-id",)

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(FineTuningJob)
class FineTuningJobAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "owner",
        "base_version",
        "method",
        "status",
        "step",
        "total_steps",
        "worker",
        "progress_at",
        "result_version",
        "created_at",
    )
    list_filter = ("status", "method")
    search_fields = ("owner__username", "worker")
    exclude = ("evaluation",)  # its sample answers come from users' data
    inlines = [JobEventInline]
