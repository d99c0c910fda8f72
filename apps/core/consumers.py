"""What every WebSocket consumer shares."""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

from .channel_layers import LAYER_ERRORS

logger = logging.getLogger(__name__)

LAYER_LOST_MESSAGE = "Live updates were interrupted; reconnecting…"


class LayerLossCloses:
    """Mixin, first among a consumer's bases: when the channel layer fails (Redis restarting),
    the socket gets an error event and closes with 1012 (service restart), so the page says why
    and reconnects; its reconnection is sent the state from the database. Without this the
    consumer dies with an exception and the client sees a bare 1011."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)  # type: ignore[misc]
        except LAYER_ERRORS as exc:
            logger.warning("socket %s closed, channel layer lost: %r", scope.get("path"), exc)
            with contextlib.suppress(Exception):  # the socket may not be open (yet, or any more)
                event = {"type": "error", "message": LAYER_LOST_MESSAGE}
                await send({"type": "websocket.send", "text": json.dumps(event)})
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": 1012})
