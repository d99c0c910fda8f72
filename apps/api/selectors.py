"""Reads of the API's own records; ``access_response`` is the only way a client-supplied
response id becomes a row."""

from __future__ import annotations

import uuid

from django.http import Http404

from apps.accounts.models import User

from .models import StoredResponse

RESPONSE_PREFIX = "resp_"


def response_id(stored: StoredResponse) -> str:
    return RESPONSE_PREFIX + stored.pk.hex


def access_response(user: User, value: object) -> StoredResponse:
    """The stored response ``value`` (``resp_<hex>``) if ``user`` owns it; 404 otherwise (for
    one that was never stored, or was deleted, as well)."""
    text = str(value)
    key = None
    if text.startswith(RESPONSE_PREFIX):
        try:
            key = uuid.UUID(text[len(RESPONSE_PREFIX) :])
        except ValueError:
            key = None
    stored = (
        StoredResponse.objects.select_related("generation", "previous")
        .filter(pk=key, user_id=user.pk)
        .first()
        if key and user.is_authenticated
        else None
    )
    if stored is None:
        raise Http404("No such response")
    return stored
