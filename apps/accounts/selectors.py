from __future__ import annotations

from django.http import Http404

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
