from django.contrib import admin
from django.http import HttpRequest

from .models import Generation, UsageRecord


@admin.register(Generation)
class GenerationAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "user",
        "model_version",
        "kind",
        "status",
        "prompt_tokens",
        "completion_tokens",
        "ttft_ms",
        "tokens_per_second",
        "created_at",
    )
    list_filter = ("status", "kind")
    # Inputs and outputs are users' private text: the admin shows figures, not content.
    exclude = ("messages", "prompt", "output")
    readonly_fields = (
        "user",
        "model_version",
        "kind",
        "params",
        "status",
        "finish_reason",
        "error_code",
        "error_message",
        "cancel_requested",
        "prompt_tokens",
        "completion_tokens",
        "ttft_ms",
        "tokens_per_second",
        "attempts",
        "created_at",
        "started_at",
        "finished_at",
    )


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "user",
        "api_key",
        "model",
        "source",
        "kind",
        "prompt_tokens",
        "completion_tokens",
    )
    list_filter = ("source", "kind", "model")
    search_fields = ("user__username",)
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
