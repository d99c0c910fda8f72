from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest

from .models import ApiKey, User
from .services import api_key_revoke


@admin.register(User)
class PlaygroundUserAdmin(UserAdmin):
    fieldsets = (*(UserAdmin.fieldsets or ()), ("Limits", {"fields": ("daily_token_quota",)}))
    list_display = ("username", "email", "is_staff", "is_active", "daily_token_quota")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are issued by their owners (account page, createapikey); staff can see and revoke them."""

    list_display = (
        "name",
        "user",
        "prefix",
        "scopes",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
    )
    list_filter = ("revoked_at",)
    search_fields = ("name", "prefix", "user__username")
    fields = (
        "user",
        "name",
        "prefix",
        "scopes",
        "expires_at",
        "requests_per_minute",
        "created_at",
        "last_used_at",
        "revoked_at",
    )
    readonly_fields = ("user", "prefix", "created_at", "last_used_at", "revoked_at")
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for api_key in queryset:
            api_key_revoke(api_key=api_key)
