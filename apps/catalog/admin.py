"""The registry in the admin: models, their versions and who sees them. Every change is written
to the audit log. The actions that act on workers (load, unload, a test prompt) extend the
version page in ``apps.inference.admin``."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext, gettext_lazy

from apps.audit.admin import AuditedAdmin

from .forms import ModelVersionForm
from .models import LanguageModel, ModelVersion
from .services import model_set_enabled, version_activate


class ModelVersionInline(admin.TabularInline):
    model = ModelVersion
    form = ModelVersionForm
    extra = 0
    fields = (
        "label",
        "source_kind",
        "source",
        "context_length",
        "is_active",
        "load_status",
        "details",
    )
    readonly_fields = ("is_active", "load_status", "details")
    show_change_link = True

    @admin.display(description="")
    def details(self, obj: ModelVersion) -> str:
        if obj.pk is None:
            return ""
        return format_html(
            '<a href="{}">settings, test prompt</a>',
            reverse("admin:catalog_modelversion_change", args=[obj.pk]),
        )


@admin.register(LanguageModel)
class LanguageModelAdmin(AuditedAdmin):
    list_display = (
        "slug",
        "display_name",
        "task",
        "is_enabled",
        "visibility",
        "active_version_label",
        "owner",
        "created_at",
    )
    list_filter = ("task", "is_enabled", "visibility")
    raw_id_fields = ("owner",)
    search_fields = ("slug", "display_name")
    filter_horizontal = ("allowed_users", "allowed_groups")
    fieldsets = (
        (None, {"fields": ("slug", "display_name", "task", "description", "is_enabled")}),
        (
            "Who sees it",
            {
                "fields": ("visibility", "allowed_users", "allowed_groups", "owner"),
                "description": "Listed users and groups apply when visibility is "
                "“Listed users and groups”. Changes apply to the next page load or API call.",
            },
        ),
    )
    inlines = [ModelVersionInline]
    actions = ["enable", "disable"]

    @admin.display(description=gettext_lazy("active version"))
    def active_version_label(self, obj: LanguageModel) -> str:
        version = obj.active_version
        return version.label if version else "—"

    @admin.action(description=gettext_lazy("Enable the selected models"), permissions=["change"])
    def enable(self, request: HttpRequest, queryset: QuerySet[LanguageModel]) -> None:
        for model in queryset:
            model_set_enabled(model=model, enabled=True, actor=request.user)  # type: ignore[arg-type]

    @admin.action(
        description=gettext_lazy("Disable the selected models (they leave every list at once)"),
        permissions=["change"],
    )
    def disable(self, request: HttpRequest, queryset: QuerySet[LanguageModel]) -> None:
        for model in queryset:
            model_set_enabled(model=model, enabled=False, actor=request.user)  # type: ignore[arg-type]


@admin.register(ModelVersion)
class ModelVersionAdmin(AuditedAdmin):
    form = ModelVersionForm
    list_display = (
        "__str__",
        "source_kind",
        "source",
        "is_active",
        "load_status",
        "load_error_short",
        "created_at",
    )
    list_filter = ("is_active", "load_status", "source_kind", "model")
    search_fields = ("model__slug", "label", "source")
    readonly_fields = ["is_active", "load_status", "load_error", "load_checked_at"]
    actions = ["activate"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = list(ModelVersionForm.Meta.fields)
        return fields + list(self.readonly_fields) if obj is not None else fields

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # A version stays with its model; activation goes through the action, never a field.
        readonly = list(self.readonly_fields)
        return ["model", *readonly] if obj is not None else readonly

    @admin.display(description=gettext_lazy("load error"))
    def load_error_short(self, obj: ModelVersion) -> str:
        return obj.load_error[:80]

    # -- actions -------------------------------------------------------------------------
    @admin.action(
        description=gettext_lazy("Activate the selected version (roll forward or back)"),
        permissions=["change"],
    )
    def activate(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        chosen = list(queryset.select_related("model"))
        if len({v.model_id for v in chosen}) != len(chosen):
            self.message_user(
                request, gettext("Choose at most one version per model."), level=messages.ERROR
            )
            return
        for version in chosen:
            if version_activate(version=version, actor=request.user):  # type: ignore[arg-type]
                self.message_user(
                    request,
                    gettext("%(version)s now answers for %(model)s.")
                    % {"version": version, "model": version.model.slug},
                )
