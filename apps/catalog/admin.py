from django.contrib import admin

from .models import LanguageModel, ModelVersion


class ModelVersionInline(admin.TabularInline):
    model = ModelVersion
    extra = 0
    fields = (
        "label",
        "source_kind",
        "source",
        "base_version",
        "context_length",
        "is_active",
        "created_at",
    )
    readonly_fields = ("created_at",)


@admin.register(LanguageModel)
class LanguageModelAdmin(admin.ModelAdmin):
    list_display = (
        "slug",
        "display_name",
        "task",
        "is_enabled",
        "visibility",
        "owner",
        "created_at",
    )
    list_filter = ("task", "is_enabled", "visibility")
    raw_id_fields = ("owner",)
    search_fields = ("slug", "display_name")
    inlines = [ModelVersionInline]
