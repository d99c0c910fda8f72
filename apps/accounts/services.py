from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from .keys import key_hash, new_key
from .models import ApiKey, User


@transaction.atomic
def user_sign_up(*, username: str, password: str) -> User:
    """Create an account. The caller has validated the username and password (SignUpForm)."""
    return User.objects.create_user(username=username, password=password)


def api_key_issue(
    *, user: User, name: str, scopes: list[str], expires_at: datetime | None = None
) -> tuple[ApiKey, str]:
    """Create a key for ``user``; returns the row and the key, which is not stored and not shown
    again. Precondition: ``scopes`` are ApiKey.Scope values (ApiKeyForm checks them)."""
    key, prefix = new_key()
    api_key = ApiKey.objects.create(
        user=user,
        name=name,
        prefix=prefix,
        key_hash=key_hash(key),
        scopes=scopes,
        expires_at=expires_at,
    )
    return api_key, key


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    """Revoke ``api_key`` now; it stops working on the next request. Revoking twice is harmless."""
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    return api_key
