"""Writing the audit log. Every change an admin or a user makes to models, versions, visibility,
keys, quotas and account settings goes through ``audit_record``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db import models

from .models import AuditEntry

if TYPE_CHECKING:
    from apps.accounts.models import User

# Never copied into the log, whatever the form says changed.
SECRET_FIELDS = frozenset({"password", "key_hash"})


def audit_record(
    *,
    actor: User | None,
    action: str,
    target: models.Model,
    changes: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append one entry. ``actor`` is None for the system (a worker, a migration)."""
    meta = target._meta
    return AuditEntry.objects.create(
        actor=actor if actor is not None and actor.pk else None,
        actor_name=actor.get_username() if actor is not None else "",
        action=action,
        target_type=f"{meta.app_label}.{meta.model_name}",
        target_id=str(target.pk),
        target_repr=str(target)[:300],
        changes=changes or {},
    )


def field_changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[Any]]:
    """``{field: [before, after]}`` for the fields whose value differs, as JSON-safe text;
    secret fields are named but their values are not kept."""
    changed: dict[str, list[Any]] = {}
    for name in sorted(set(before) | set(after)):
        old, new = _plain(before.get(name)), _plain(after.get(name))
        if old != new:
            changed[name] = ["(hidden)", "(hidden)"] if name in SECRET_FIELDS else [old, new]
    return changed


def snapshot(obj: models.Model, fields: list[str] | None = None) -> dict[str, Any]:
    """The current values of ``obj``'s concrete and many-to-many fields (or of ``fields``)."""
    values: dict[str, Any] = {}
    if obj.pk is None:
        return values
    for field in obj._meta.concrete_fields:
        if fields is None or field.name in fields:
            values[field.name] = field.value_from_object(obj)
    for m2m in obj._meta.many_to_many:
        if fields is None or m2m.name in fields:
            values[m2m.name] = sorted(str(o) for o in getattr(obj, m2m.name).all())
    return values


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str | list | dict):
        return value
    if isinstance(value, models.Model):
        return str(value)
    if isinstance(value, tuple | set | frozenset):
        return sorted(str(v) for v in value)
    return str(value)
