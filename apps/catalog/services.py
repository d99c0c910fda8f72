"""Changes to the registry. Each one is written to the audit log with the admin who made it."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from apps.accounts.models import User
from apps.audit.models import AuditEntry
from apps.audit.services import audit_record

from .models import LanguageModel, ModelVersion


@transaction.atomic
def version_activate(*, version: ModelVersion, actor: User | None) -> bool:
    """Make ``version`` the one that answers for its model (activating an older one is a rollback).

    Requests already queued keep the version they were accepted with; the next ones use this.
    False when it was already active.
    """
    # Lock every version of the model, so two activations at once run one after the other.
    versions = list(ModelVersion.objects.select_for_update().filter(model_id=version.model_id))
    current = next((v for v in versions if v.is_active), None)
    if current is not None and current.pk == version.pk:
        return False
    if current is not None:
        ModelVersion.objects.filter(pk=current.pk).update(is_active=False)
    ModelVersion.objects.filter(pk=version.pk).update(is_active=True)
    version.is_active = True
    audit_record(
        actor=actor,
        action=AuditEntry.Action.ACTIVATE,
        target=version,
        changes={"active version": [current.label if current else None, version.label]},
    )
    return True


def version_record_load(*, version_id: int, error: str = "") -> None:
    """Note that a worker loaded ``version_id`` (``error`` empty) or failed to, with the reason."""
    ModelVersion.objects.filter(pk=version_id).update(
        load_status=ModelVersion.LoadStatus.FAILED if error else ModelVersion.LoadStatus.READY,
        load_error=error[:2000],
        load_checked_at=timezone.now(),
    )


def model_set_enabled(*, model: LanguageModel, enabled: bool, actor: User | None) -> None:
    """Enable or disable ``model``; disabled models leave the picker and ``/v1/models`` at once."""
    if model.is_enabled == enabled:
        return
    model.is_enabled = enabled
    model.save(update_fields=["is_enabled"])
    audit_record(
        actor=actor,
        action=AuditEntry.Action.UPDATE,
        target=model,
        changes={"is_enabled": [not enabled, enabled]},
    )
