from __future__ import annotations

from django.http import Http404
from django.utils import timezone

from .keys import key_matches, key_prefix
from .models import ApiKey, User


def access_api_key(user: User, api_key_id: object) -> ApiKey:
    """``user``'s key ``api_key_id``; 404 for missing and not-yours alike."""
    try:
        pk = int(str(api_key_id))
    except ValueError:
        raise Http404("No such key") from None
    api_key = ApiKey.objects.filter(pk=pk, user_id=user.pk).first()
    if api_key is None:
        raise Http404("No such key")
    return api_key


def api_keys_for(user: User) -> list[ApiKey]:
    return list(ApiKey.objects.filter(user=user))


def api_key_authenticate(key: str) -> ApiKey | None:
    """The usable key row for the presented ``key``, recording its use; None when the key is
    malformed, unknown, revoked, expired, or its user is inactive."""
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
