from __future__ import annotations

from django.http import HttpRequest

from apps.accounts.models import ApiKey
from apps.accounts.services import api_key_authenticate

from .errors import ApiError


def authenticate(request: HttpRequest, *, scope: str | None) -> ApiKey:
    """The key presented as ``Authorization: Bearer <key>``, allowed ``scope`` (None: any scope).

    Raises ApiError 401 for a missing, malformed, unknown, revoked or expired key and 403 for a key
    without the scope.
    """
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(
            401,
            "Missing API key: send it as 'Authorization: Bearer <key>'.",
            code="missing_api_key",
        )
    api_key = api_key_authenticate(key.strip())
    if api_key is None:
        raise ApiError(
            401, "Invalid API key: it is unknown, revoked or expired.", code="invalid_api_key"
        )
    if scope is not None and not api_key.allows(scope):
        name = ApiKey.Scope(scope).value  # "fine-tuning", never the enum's repr
        raise ApiError(
            403,
            f"This API key does not have the {name} scope; create a key with it on the API "
            "keys page.",
            code="insufficient_scope",
        )
    return api_key
