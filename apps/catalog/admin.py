"""The registry in the admin: models, their versions, who sees them, and the actions that act on
workers (load, unload, a test prompt). Every change is written to the audit log."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from apps.audit.admin import AuditedAdmin
from apps.audit.models import AuditEntry
from apps.audit.services import audit_record

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

    @admin.display(description="active version")
    def active_version_label(self, obj: LanguageModel) -> str:
        version = obj.active_version
        return version.label if version else "—"

    @admin.action(description="Enable the selected models", permissions=["change"])
    def enable(self, request: HttpRequest, queryset: QuerySet[LanguageModel]) -> None:
        for model in queryset:
            model_set_enabled(model=model, enabled=True, actor=request.user)  # type: ignore[arg-type]

    @admin.action(
        description="Disable the selected models (they leave every list at once)",
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
    readonly_fields = ("is_active", "load_status", "load_error", "load_checked_at", "test_link")
    actions = ["activate", "load_on_workers", "unload_from_workers"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = list(ModelVersionForm.Meta.fields)
        return fields + list(self.readonly_fields) if obj is not None else fields

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # A version stays with its model; activation goes through the action, never a field.
        readonly = list(self.readonly_fields)
        return ["model", *readonly] if obj is not None else readonly

    @admin.display(description="load error")
    def load_error_short(self, obj: ModelVersion) -> str:
        return obj.load_error[:80]

    @admin.display(description="test")
    def test_link(self, obj: ModelVersion) -> str:
        return format_html(
            '<a href="{}">Send a test prompt</a>',
            reverse("admin:catalog_modelversion_test", args=[obj.pk]),
        )

    # -- actions -------------------------------------------------------------------------
    @admin.action(
        description="Activate the selected version (roll forward or back)", permissions=["change"]
    )
    def activate(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        chosen = list(queryset.select_related("model"))
        if len({v.model_id for v in chosen}) != len(chosen):
            self.message_user(
                request, "Choose at most one version per model.", level=messages.ERROR
            )
            return
        for version in chosen:
            if version_activate(version=version, actor=request.user):  # type: ignore[arg-type]
                self.message_user(request, f"{version} now answers for {version.model.slug}.")

    @admin.action(
        description="Load the selected versions on every live inference worker",
        permissions=["change"],
    )
    def load_on_workers(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        from apps.inference.control import LOAD, broadcast, live_inference_workers

        hostnames = live_inference_workers()
        if not hostnames:
            self.message_user(request, "No inference worker is live.", level=messages.ERROR)
            return
        for version in queryset.select_related("model"):
            answers = broadcast(LOAD, {"version_id": version.pk}, hostnames)
            audit_record(
                actor=request.user,  # type: ignore[arg-type]
                action=AuditEntry.Action.LOAD,
                target=version,
                changes={"workers": answers},
            )
            self.message_user(
                request,
                f"{version}: "
                + ", ".join(f"{name} {answer}" for name, answer in sorted(answers.items()))
                + ". The worker list shows when it is ready.",
            )

    @admin.action(
        description="Unload the selected versions from every live inference worker",
        permissions=["change"],
    )
    def unload_from_workers(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        from apps.inference.control import UNLOAD, broadcast, live_inference_workers

        hostnames = live_inference_workers()
        for version in queryset.select_related("model"):
            answers = broadcast(UNLOAD, {"key": version.key}, hostnames) if hostnames else {}
            audit_record(
                actor=request.user,  # type: ignore[arg-type]
                action=AuditEntry.Action.UNLOAD,
                target=version,
                changes={"workers": answers},
            )
            self.message_user(
                request,
                f"{version}: "
                + (", ".join(f"{n} {a}" for n, a in sorted(answers.items())) or "no live worker"),
            )

    # -- the test prompt -----------------------------------------------------------------
    def get_urls(self) -> list[Any]:
        return [
            path(
                "<int:version_id>/test/",
                self.admin_site.admin_view(self.test_prompt_view),
                name="catalog_modelversion_test",
            ),
            *super().get_urls(),
        ]

    def test_prompt_view(self, request: HttpRequest, version_id: int) -> HttpResponse:
        """Send a prompt to this version (active or not) through a worker, and show the answer
        and its timing as it arrives. The generation is the admin's own."""
        from apps.inference.models import Generation
        from apps.inference.selectors import access_generation
        from apps.inference.services import version_test_prompt

        version = get_object_or_404(ModelVersion.objects.select_related("model"), pk=version_id)
        if not self.has_change_permission(request, version):
            return HttpResponse("You may not test models.", status=403)
        if request.method == "POST":
            if version.model.task not in (LanguageModel.Task.CHAT, LanguageModel.Task.COMPLETION):
                return HttpResponse("Test prompts are for chat and completion models.", status=400)
            prompt = request.POST.get("prompt", "").strip()
            if not prompt:
                messages.error(request, "Write a prompt first.")
                return HttpResponseRedirect(request.path)
            sent = version_test_prompt(version=version, actor=request.user, prompt=prompt)  # type: ignore[arg-type]
            return HttpResponseRedirect(f"{request.path}?generation={sent.pk}")
        generation: Generation | None = None
        if request.GET.get("generation"):
            generation = access_generation(request.user, request.GET["generation"])  # type: ignore[arg-type]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Test prompt: {version}",
            "version": version,
            "generation": generation,
            "prompt": (generation.prompt or (generation.messages or [{}])[-1].get("content", ""))
            if generation
            else "Say hello in one short sentence.",
        }
        return TemplateResponse(request, "admin/catalog/modelversion/test_prompt.html", context)
