from typing import Any

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest
from django.template.defaultfilters import filesizeformat
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.translation import gettext_lazy

from .models import Worker


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):
    """The workers as their heartbeats describe them; the list refreshes itself every few
    seconds. A worker silent for a day, with nothing left running, is dropped from the list."""

    change_list_template = "admin/core/worker/change_list.html"
    list_display = (
        "hostname",
        "state_badge",
        "device",
        "queue_names",
        "loaded_models",
        "memory",
        "in_flight",
        "last_seen",
    )
    readonly_fields = [f.name for f in Worker._meta.fields]

    @property
    def lost_after(self) -> float:
        return settings.WORKER_LOST_SECONDS

    @admin.display(description=gettext_lazy("state"))
    def state_badge(self, obj: Worker) -> str:
        colour = {"live": "#2e7d32", "lost": "#c62828", "stopped": "#757575"}[obj.state]
        return format_html('<strong style="color: {}">{}</strong>', colour, obj.state)

    @admin.display(description=gettext_lazy("queues"))
    def queue_names(self, obj: Worker) -> str:
        return ", ".join(obj.queues)

    @admin.display(description=gettext_lazy("loaded models"))
    def loaded_models(self, obj: Worker) -> str:
        if not obj.loaded:
            return "—"
        return format_html_join(
            mark_safe("<br>"),
            "{} on {} ({}, {}, {} in use)",
            (
                (
                    m["key"],
                    m.get("engine", m["kind"]),
                    m["state"],
                    filesizeformat(m["memory_bytes"]),
                    m["in_use"],
                )
                for m in obj.loaded
            ),
        )

    @admin.display(description=gettext_lazy("memory"))
    def memory(self, obj: Worker) -> str:
        text = f"{filesizeformat(obj.memory_bytes)} resident, models {filesizeformat(obj.models_bytes)}"
        if obj.memory_budget_bytes:
            text += f" of {filesizeformat(obj.memory_budget_bytes)}"
        if obj.gpu_memory_bytes is not None:
            text += f", GPU {filesizeformat(obj.gpu_memory_bytes)}"
        return text

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the reapers judge work by these rows; old ones are pruned
