from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from .models import AuditEntry
from .services import audit_record, field_changes, snapshot


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """The log is read here and written only by the code (``audit_record``)."""

    list_display = ("at", "actor_name", "action", "target_type", "target_repr", "changes")
    list_filter = ("action", "target_type")
    search_fields = ("actor_name", "target_repr", "target_id")
    date_hierarchy = "at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class AuditedAdmin(admin.ModelAdmin):
    """A ModelAdmin whose saves and deletes, inline rows included, are written to the audit log
    with the values before and after. The admin runs each of these in one transaction, so a
    change that fails leaves no entry behind."""

    audit_creates = True  # False where the create goes through a service that audits it

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        fresh = type(obj)._default_manager.filter(pk=obj.pk).first() if change else None
        request._audit_before = snapshot(fresh) if fresh is not None else {}  # type: ignore[attr-defined]
        super().save_model(request, obj, form, change)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)  # many-to-many fields land here
        before = getattr(request, "_audit_before", {})
        changes = field_changes(before, snapshot(form.instance))
        if (change and not changes) or (not change and not self.audit_creates):
            return
        action = AuditEntry.Action.UPDATE if change else AuditEntry.Action.CREATE
        audit_record(actor=request.user, action=action, target=form.instance, changes=changes)  # type: ignore[arg-type]

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        before = {
            f.instance.pk: snapshot(type(f.instance)._default_manager.get(pk=f.instance.pk))
            for f in formset.initial_forms
        }
        for deleted in formset.deleted_forms:
            if deleted.instance.pk is not None:
                self._audit_delete(request, deleted.instance)
        super().save_formset(request, form, formset, change)
        for obj in formset.new_objects:
            audit_record(
                actor=request.user,  # type: ignore[arg-type]
                action=AuditEntry.Action.CREATE,
                target=obj,
                changes=field_changes({}, snapshot(obj)),
            )
        for obj, _fields in formset.changed_objects:
            audit_record(
                actor=request.user,  # type: ignore[arg-type]
                action=AuditEntry.Action.UPDATE,
                target=obj,
                changes=field_changes(before.get(obj.pk, {}), snapshot(obj)),
            )

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        self._audit_delete(request, obj)
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        for obj in queryset:
            self._audit_delete(request, obj)
        super().delete_queryset(request, queryset)

    def _audit_delete(self, request: HttpRequest, obj: Model) -> None:
        audit_record(
            actor=request.user,  # type: ignore[arg-type]
            action=AuditEntry.Action.DELETE,
            target=obj,
            changes=field_changes(snapshot(obj), {}),
        )


class PrivateContentAdmin(admin.ModelAdmin):
    """Users' own text (``private_fields``, and inlines in ``private_inlines``) stays out of the
    admin unless ADMIN_CONVERSATION_ACCESS is on; then each page that shows it is audited."""

    private_fields: tuple[str, ...] = ()
    private_inlines: list[Any] = []

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = [f for f in super().get_fields(request, obj) if f not in self.private_fields]
        return fields + list(self.private_fields) if _access() else fields

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        readonly = list(super().get_readonly_fields(request, obj))
        return readonly + list(self.private_fields) if _access() else readonly

    def get_inlines(self, request: HttpRequest, obj: Any) -> list[Any]:
        return [*super().get_inlines(request, obj), *(self.private_inlines if _access() else [])]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> Any:
        if _access() and request.method == "GET":
            from django.contrib.admin.utils import unquote

            obj = self.get_object(request, unquote(object_id))
            if obj is not None:
                audit_record(
                    actor=request.user,  # type: ignore[arg-type]
                    action=AuditEntry.Action.VIEW,
                    target=obj,
                    changes={"owner": str(getattr(obj, self.owner_field, ""))},
                )
        return super().change_view(request, object_id, form_url, extra_context)

    owner_field = "user"


def _access() -> bool:
    from django.conf import settings

    return bool(settings.ADMIN_CONVERSATION_ACCESS)
