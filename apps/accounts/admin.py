from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext, gettext_lazy

from apps.audit.admin import AuditedAdmin
from apps.audit.models import AuditEntry
from apps.audit.services import audit_record

from .models import ApiKey, User
from .services import api_key_issue, api_key_revoke
from .sockets import user_sockets_close


@admin.register(User)
class PlaygroundUserAdmin(AuditedAdmin, UserAdmin):  # type: ignore[misc]
    fieldsets = (*(UserAdmin.fieldsets or ()), ("Limits", {"fields": ("daily_token_quota",)}))
    list_display = ("username", "email", "is_staff", "is_active", "daily_token_quota")

    def user_change_password(self, request: HttpRequest, id: str, form_url: str = "") -> Any:
        response = super().user_change_password(request, id, form_url)
        if request.method == "POST" and response.status_code == 302:  # the form was accepted
            audit_record(
                actor=request.user,  # type: ignore[arg-type]
                action=AuditEntry.Action.UPDATE,
                target=User.objects.get(pk=id),
                changes={"password": ["(hidden)", "(hidden)"]},
            )
        return response

    def save_model(self, request: HttpRequest, obj: User, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if change and "is_active" in form.changed_data and not obj.is_active:
            # Their sessions and keys stop working on the next request; open sockets close now.
            transaction.on_commit(lambda: user_sockets_close(user_id=obj.pk))


class ApiKeyAdminForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=ApiKey.Scope.choices, widget=forms.CheckboxSelectMultiple
    )

    class Meta:
        model = ApiKey
        fields: tuple[str, ...] = ("user", "name", "scopes", "expires_at", "requests_per_minute")


@admin.register(ApiKey)
class ApiKeyAdmin(AuditedAdmin):
    """Staff issue keys for a user (shown once, in the confirmation message), set their limits and
    revoke them; the key material is never shown again or editable."""

    form = ApiKeyAdminForm
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
    actions = ["revoke"]
    audit_creates = False  # api_key_issue writes the entry

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> tuple[str, ...]:
        fields: tuple[str, ...] = ("user", "name", "scopes", "expires_at", "requests_per_minute")
        if obj is not None:
            fields += ("prefix", "created_at", "last_used_at", "revoked_at")
        return fields

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        if obj is None:
            return []
        return ["user", "prefix", "created_at", "last_used_at", "revoked_at"]

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        api_key, key = api_key_issue(
            user=obj.user,
            name=obj.name,
            scopes=obj.scopes,
            expires_at=obj.expires_at,
            actor=request.user,  # type: ignore[arg-type]
        )
        if obj.requests_per_minute:
            api_key.requests_per_minute = obj.requests_per_minute
            api_key.save(update_fields=["requests_per_minute"])
        obj.pk = api_key.pk
        self.message_user(
            request,
            gettext("The new key for %(user)s: %(key)s (copy it now: it is not shown again).")
            % {"user": obj.user, "key": key},
            level=messages.WARNING,
        )

    @admin.action(description=gettext_lazy("Revoke the selected keys"), permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for api_key in queryset:
            api_key_revoke(api_key=api_key, actor=request.user)  # type: ignore[arg-type]
