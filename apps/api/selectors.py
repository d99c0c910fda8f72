"""Reads of the API's own records; ``access_response`` is the only way a client-supplied
response id becomes a row."""

from __future__ import annotations

import uuid
from typing import TypeVar

from django.db.models import Model, QuerySet
from django.http import Http404

from apps.accounts.models import User

from .models import ApiFile, Batch, StoredResponse

RESPONSE_PREFIX = "resp_"
M = TypeVar("M", bound=Model)


def uuid_of(value: object, prefix: str) -> uuid.UUID | None:
    """The UUID in an id such as ``batch_<hex>``, or None when it is not one."""
    text = str(value)
    if not text.startswith(prefix):
        return None
    try:
        return uuid.UUID(text[len(prefix) :])
    except ValueError:
        return None


def response_id(stored: StoredResponse) -> str:
    return RESPONSE_PREFIX + stored.pk.hex


def _owned(rows: QuerySet[M], user: User, value: object, prefix: str, what: str) -> M:
    """The row of ``rows`` whose id is ``value`` (``<prefix><hex>``) if ``user`` owns it (the
    ``user`` or ``owner`` field); Http404 naming ``what`` for a missing one and another's
    alike."""
    key = uuid_of(value, prefix)
    owner = "owner_id" if any(f.name == "owner" for f in rows.model._meta.fields) else "user_id"
    found = (
        rows.filter(pk=key, **{owner: user.pk}).first() if key and user.is_authenticated else None
    )
    if found is None:
        raise Http404(f"No such {what}")
    return found


def access_response(user: User, value: object) -> StoredResponse:
    """The stored response ``value`` (``resp_<hex>``) if ``user`` owns it; 404 otherwise (for
    one that was never stored, or was deleted, as well)."""
    rows = StoredResponse.objects.select_related("generation", "previous")
    return _owned(rows, user, value, RESPONSE_PREFIX, "response")


def access_api_file(user: User, file_id: object) -> ApiFile:
    """The Batch API file ``file_id`` (``file-<hex>``) if ``user`` owns it; 404 otherwise."""
    return _owned(ApiFile.objects.all(), user, file_id, "file-", "file")


def access_batch(user: User, batch_id: object) -> Batch:
    """The batch ``batch_id`` (``batch_<hex>``) if ``user`` owns it; 404 otherwise."""
    return _owned(Batch.objects.all(), user, batch_id, "batch_", "batch")


def api_files_for(user: User) -> list[ApiFile]:
    return list(ApiFile.objects.filter(owner=user).defer("content"))


def batches_for(user: User) -> list[Batch]:
    return list(Batch.objects.filter(user=user))
