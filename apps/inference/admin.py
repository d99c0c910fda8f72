from django.contrib import admin

from .models import Generation


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
