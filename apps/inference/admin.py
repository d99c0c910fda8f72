"""Generations and usage in the admin (figures, not users' text), and the actions on model
versions that act on the workers: load, unload, a test prompt (the registry's own admin is
``apps.catalog.admin``; this one extends its version page)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext, gettext_lazy

from apps.audit.admin import PrivateContentAdmin
from apps.catalog.admin import ModelVersionAdmin
from apps.catalog.models import LanguageModel, ModelVersion
from apps.core.errors import ServiceError

from .models import Generation, UsageRecord
from .selectors import access_generation
from .services import version_load_on_workers, version_test_prompt, version_unload_from_workers


@admin.register(Generation)
class GenerationAdmin(PrivateContentAdmin):
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
    # Inputs and outputs are users' private text: the admin shows figures, not content, unless
    # ADMIN_CONVERSATION_ACCESS is on.
    private_fields = ("messages", "prompt", "output")
    fields = readonly_fields = (
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
        "retryable",
        "attempts",
        "worker",
        "attempt_log",
        "created_at",
        "started_at",
        "finished_at",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # rows come from users' requests, never from the admin


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


admin.site.unregister(ModelVersion)


@admin.register(ModelVersion)
class ServedModelVersionAdmin(ModelVersionAdmin):
    """The registry's version page, with what acts on the workers serving it."""

    readonly_fields = [*ModelVersionAdmin.readonly_fields, "test_link"]
    actions = [*ModelVersionAdmin.actions, "load_on_workers", "unload_from_workers"]

    @admin.display(description=gettext_lazy("test"))
    def test_link(self, obj: ModelVersion) -> str:
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:catalog_modelversion_test", args=[obj.pk]),
            gettext("Send a test prompt"),
        )

    @admin.action(
        description=gettext_lazy("Load the selected versions on every live inference worker"),
        permissions=["change"],
    )
    def load_on_workers(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        for version in queryset.select_related("model"):
            try:
                answers = version_load_on_workers(version=version, actor=request.user)  # type: ignore[arg-type]
            except ServiceError as exc:
                self.message_user(request, exc.message, level=messages.ERROR)
                return
            self.message_user(
                request,
                gettext("%(version)s: %(answers)s. The worker list shows when it is ready.")
                % {"version": version, "answers": _answers(answers)},
            )

    @admin.action(
        description=gettext_lazy("Unload the selected versions from every live inference worker"),
        permissions=["change"],
    )
    def unload_from_workers(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        for version in queryset.select_related("model"):
            answers = version_unload_from_workers(version=version, actor=request.user)  # type: ignore[arg-type]
            answered = _answers(answers) or gettext("no live worker")
            self.message_user(request, f"{version}: {answered}")

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


def _answers(answers: dict[str, str]) -> str:
    return ", ".join(f"{name} {answer}" for name, answer in sorted(answers.items()))
