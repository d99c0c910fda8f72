from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from apps.audit.models import AuditEntry
from apps.audit.services import audit_record

from .keys import key_hash, key_matches, key_prefix, new_key
from .models import ApiKey, User


@transaction.atomic
def user_sign_up(*, username: str, password: str) -> User:
    """Create an account. The caller has validated the username and password (SignUpForm)."""
    return User.objects.create_user(username=username, password=password)


def user_language_set(*, user: User, language: str) -> None:
    """Remember ``language`` (one of LANGUAGES, or "" for the browser's) as ``user``'s."""
    User.objects.filter(pk=user.pk).update(language=language)
    user.language = language


@transaction.atomic
def api_key_issue(
    *,
    user: User,
    name: str,
    scopes: list[str],
    expires_at: datetime | None = None,
    actor: User | None = None,
) -> tuple[ApiKey, str]:
    """Create a key for ``user``; returns the row and the key, which is not stored and not shown
    again. ``actor`` is who asked (the user, or staff in the admin); it goes to the audit log.
    Precondition: ``scopes`` are ApiKey.Scope values (ApiKeyForm checks them)."""
    key, prefix = new_key()
    api_key = ApiKey.objects.create(
        user=user,
        name=name,
        prefix=prefix,
        key_hash=key_hash(key),
        scopes=scopes,
        expires_at=expires_at,
    )
    audit_record(
        actor=actor or user,
        action=AuditEntry.Action.ISSUE,
        target=api_key,
        changes={"user": user.get_username(), "scopes": scopes, "name": name},
    )
    return api_key, key


@transaction.atomic
def api_key_revoke(*, api_key: ApiKey, actor: User | None = None) -> ApiKey:
    """Revoke ``api_key`` now; it stops working on the next request. Revoking twice is harmless.
    ``actor`` (default: the key's owner) goes to the audit log."""
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
        audit_record(actor=actor or api_key.user, action=AuditEntry.Action.REVOKE, target=api_key)
    return api_key


def api_key_authenticate(key: str) -> ApiKey | None:
    """The usable key row for the presented ``key``, recording its use (a write, so this is a
    service, not a selector); None when the key is malformed, unknown, revoked, expired, or its
    user is inactive."""
    prefix = key_prefix(key)
    if prefix is None:
        return None
    api_key = ApiKey.objects.usable().select_related("user").filter(prefix=prefix).first()
    if api_key is None or not key_matches(key, api_key.key_hash) or not api_key.user.is_active:
        return None
    now = timezone.now()
    # Written at most once a minute per key: the timestamp is for people, not for accounting.
    if api_key.last_used_at is None or (now - api_key.last_used_at).total_seconds() > 60:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now
    return api_key
