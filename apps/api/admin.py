"""The Batch API's batches and the stored responses, for staff to see (not to edit: they are
the API's records, written by its services and runner)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from .models import Batch, StoredResponse


class _ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Batch)
class BatchAdmin(_ReadOnly):
    list_display = ("openai_id", "user", "endpoint", "status", "total", "completed", "failed")
    list_filter = ("status", "endpoint")
    search_fields = ("user__username",)
    date_hierarchy = "created_at"


@admin.register(StoredResponse)
class StoredResponseAdmin(_ReadOnly):
    list_display = ("id", "user", "model", "created_at")
    search_fields = ("user__username", "model")
    date_hierarchy = "created_at"
