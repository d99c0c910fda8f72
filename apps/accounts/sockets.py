"""Every WebSocket of a signed-in user closes when the account is deactivated: at once through the
user's channel-layer group (``user_sockets_close``), or, while the channel layer is away (Redis
restarting), at the socket's next look at the account."""

from __future__ import annotations

import asyncio
import contextlib
from http.cookies import SimpleCookie
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import translation
from django.utils.translation import trans_real

from apps.core.channel_layers import Listener, publish_to

from .models import User


def scope_language(scope: dict[str, Any]) -> str:
    """The language a socket speaks, chosen as for a page: the account's own, else the language
    cookie, else the browser's Accept-Language, else LANGUAGE_CODE."""
    user = scope.get("user")
    if user is not None and user.is_authenticated and getattr(user, "language", ""):
        return str(user.language)
    headers = dict(scope.get("headers") or [])
    cookies = SimpleCookie(headers.get(b"cookie", b"").decode("latin-1"))
    chosen = cookies.get(settings.LANGUAGE_COOKIE_NAME)
    if chosen is not None and chosen.value in dict(settings.LANGUAGES):
        return chosen.value
    accept = headers.get(b"accept-language", b"").decode("latin-1")
    for code, _ in trans_real.parse_accept_lang_header(accept):
        with contextlib.suppress(LookupError):
            return translation.get_supported_language_variant(code)
    return str(settings.LANGUAGE_CODE)


class InTheirLanguage:
    """Mixin for a consumer: each event is handled, and its messages and partials rendered, in
    ``scope_language`` (tasks it starts inherit it)."""

    scope: Any

    async def dispatch(self, message: Any) -> None:
        with translation.override(scope_language(self.scope)):
            await super().dispatch(message)  # type: ignore[misc]


# While the channel layer is away, a socket looks at its account this often.
ACCOUNT_CHECK_SECONDS = 5.0


def user_group(user_id: object) -> str:
    return f"user-{user_id}"


class ClosedOnDeactivation:
    """Mixin for an AsyncJsonWebsocketConsumer: call ``watch_deactivation`` after accepting and
    ``stop_watching`` on disconnect. The watch runs on a channel of its own (``Listener``), so it
    needs none of the consumer's and outlives a Redis restart."""

    scope: Any
    _deactivation_watch: asyncio.Task[None] | None = None

    def watch_deactivation(self) -> None:
        self._deactivation_watch = asyncio.create_task(self._watch_account())

    def stop_watching(self) -> None:
        if self._deactivation_watch is not None:
            self._deactivation_watch.cancel()

    async def _watch_account(self) -> None:
        user_id = self.scope["user"].pk
        loop = asyncio.get_running_loop()
        next_look = 0.0
        async with Listener([user_group(user_id)]) as listener:
            while True:
                message = await listener.next(60)
                if message is not None:
                    if message.get("type") == "user.deactivated":
                        break
                    continue
                if listener.up or loop.time() < next_look:
                    continue
                next_look = loop.time() + ACCOUNT_CHECK_SECONDS
                if not await database_sync_to_async(_is_active)(user_id):
                    break
        await self.close(code=4403)  # type: ignore[attr-defined]


def _is_active(user_id: int) -> bool:
    return User.objects.filter(pk=user_id, is_active=True).exists()


def user_sockets_close(*, user_id: object) -> None:
    """Close every open WebSocket of the user ``user_id`` (from sync code)."""
    publish_to(user_group(user_id), {"type": "user.deactivated"})
