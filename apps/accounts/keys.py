"""API key material: how keys look, and how they are hashed and checked.

A key is ``pg-<prefix>-<secret>``: the prefix (10 characters) finds the row, and an HMAC-SHA256 of
the whole key under SECRET_KEY is what is stored and compared, in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from django.conf import settings

KEY_START = "pg-"
PREFIX_LENGTH = 10


def new_key() -> tuple[str, str]:
    """A fresh key and its prefix."""
    prefix = secrets.token_hex(PREFIX_LENGTH // 2)
    return f"{KEY_START}{prefix}-{secrets.token_urlsafe(32)}", prefix


def key_hash(key: str) -> str:
    return hmac.new(settings.SECRET_KEY.encode(), key.encode(), hashlib.sha256).hexdigest()


def key_prefix(key: str) -> str | None:
    """The prefix of a well-formed key, or None."""
    if not key.startswith(KEY_START):
        return None
    prefix, _, secret = key[len(KEY_START) :].partition("-")
    if len(prefix) != PREFIX_LENGTH or not secret:
        return None
    return prefix


def key_matches(key: str, stored_hash: str) -> bool:
    return hmac.compare_digest(key_hash(key), stored_hash)
