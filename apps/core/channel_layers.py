"""Channel layers: what the Redis layer raises while Redis is away, and the embedded default's
layer, Channels' in-memory one made safe across threads.

In the embedded default the Celery worker runs as threads of the server process, and each
``async_to_sync(group_send)`` call there runs on a short-lived event loop of its own. The stock
``InMemoryChannelLayer`` keeps ``asyncio.Queue`` objects owned by the server's loop, which must not be
touched from another loop. This subclass hands every operation that comes from a foreign loop to the
loop that owns the queues, so messages reach the consumers at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from channels.layers import InMemoryChannelLayer
from redis.exceptions import RedisError

# What a channel layer raises while Redis is down or restarting.
LAYER_ERRORS = (RedisError, OSError)


class ThreadSafeInMemoryChannelLayer(InMemoryChannelLayer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._home: asyncio.AbstractEventLoop | None = None

    async def _on_home(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Any:
        current = asyncio.get_running_loop()
        home = self._home
        if home is None or home.is_closed() or not home.is_running():
            self._home = home = current
        if home is current:
            return await fn(*args)
        future = asyncio.run_coroutine_threadsafe(fn(*args), home)
        return await asyncio.wrap_future(future)

    async def receive(self, channel: str) -> Any:
        return await self._on_home(super().receive, channel)

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        await self._on_home(super().send, channel, message)

    async def group_add(self, group: str, channel: str) -> None:
        await self._on_home(super().group_add, group, channel)

    async def group_discard(self, group: str, channel: str) -> None:
        await self._on_home(super().group_discard, group, channel)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        await self._on_home(super().group_send, group, message)
