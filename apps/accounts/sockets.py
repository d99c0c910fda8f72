"""Every WebSocket of a signed-in user joins the user's group, so that deactivating the account
closes its open sockets at once (``user_sockets_close``)."""

from __future__ import annotations

from typing import Any


def user_group(user_id: object) -> str:
    return f"user-{user_id}"


class ClosedOnDeactivation:
    """Mixin for AsyncJsonWebsocketConsumer: call ``join_user_group`` after accepting and
    ``leave_user_group`` on disconnect."""

    channel_layer: Any
    channel_name: str
    scope: Any

    async def join_user_group(self) -> None:
        await self.channel_layer.group_add(user_group(self.scope["user"].pk), self.channel_name)

    async def leave_user_group(self) -> None:
        user = self.scope.get("user")
        if user is not None and user.pk is not None:
            await self.channel_layer.group_discard(user_group(user.pk), self.channel_name)

    async def user_deactivated(self, message: dict[str, Any]) -> None:
        await self.close(code=4403)  # type: ignore[attr-defined]


def user_sockets_close(*, user_id: object) -> None:
    """Close every open WebSocket of the user ``user_id`` (from sync code)."""
    from apps.inference.streaming import publish_to

    publish_to(user_group(user_id), {"type": "user.deactivated"})
