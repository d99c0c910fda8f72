"""Channel layers: publishing from sync code, what the Redis layer raises while Redis is away,
and the embedded default's layer, Channels' in-memory one made safe across threads.

In the embedded default the Celery worker runs as threads of the server process, and each
``async_to_sync(group_send)`` call there runs on a short-lived event loop of its own. The stock
``InMemoryChannelLayer`` keeps ``asyncio.Queue`` objects owned by the server's loop, which must not be
touched from another loop. This subclass hands every operation that comes from a foreign loop to the
loop that owns the queues, so messages reach the consumers at once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from channels.layers import InMemoryChannelLayer, get_channel_layer
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

# What a channel layer raises while Redis is down or restarting.
LAYER_ERRORS = (RedisError, OSError)

_publisher: asyncio.AbstractEventLoop | None = None
_publisher_lock = threading.Lock()


def _publisher_loop() -> asyncio.AbstractEventLoop:
    """One event loop per process, on its own thread, for publishing from sync code.

    ``async_to_sync`` would start a new loop per call, and channels_redis keeps its connections per
    loop, so each delta would open a Redis connection; measured, that made publishing the largest
    cost of a worker thread streaming an answer.
    """
    global _publisher
    with _publisher_lock:
        if _publisher is None or _publisher.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="channel-publisher", daemon=True).start()
            _publisher = loop
        return _publisher


def publish_to(group: str, event: dict[str, Any]) -> None:
    """Send ``event`` to ``group`` from sync code (not from an event loop's thread); returns once
    the channel layer has taken it, so one thread's events keep their order. A layer that fails
    is logged, not raised: readers fall back on the database, the record."""
    layer = get_channel_layer()
    if layer is None:
        return
    future = asyncio.run_coroutine_threadsafe(layer.group_send(group, event), _publisher_loop())
    try:
        future.result(timeout=30)
    except (*LAYER_ERRORS, TimeoutError) as exc:
        future.cancel()
        logger.warning("could not publish to %s: %r", group, exc)


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


class Listener:
    """Messages sent to ``groups``, on a channel of its own, for a reader that must outlive the
    channel layer: while the layer is away (Redis restarting) ``next`` sleeps and returns None,
    so the reader looks at the database, the record, instead; it joins the groups again every
    REJOIN_SECONDS until the layer answers, and is fast again from then on.

    Use as ``async with Listener(groups) as listener: message = await listener.next(timeout)``.
    """

    POLL_SECONDS = 0.5  # how long ``next`` sleeps while the layer is away
    REJOIN_SECONDS = 5.0

    def __init__(self, groups: list[str]) -> None:
        self.groups = groups
        self.layer: Any = get_channel_layer()
        self.channel = ""
        self.up = False
        self._lost = False  # the layer failed since this listener began
        self._next_try = 0.0

    async def __aenter__(self) -> Listener:
        await self._join()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.up:
            try:
                for group in self.groups:
                    await self.layer.group_discard(group, self.channel)
            except LAYER_ERRORS:  # a restarted Redis has forgotten them anyway
                pass

    async def _join(self) -> None:
        self._next_try = asyncio.get_running_loop().time() + self.REJOIN_SECONDS
        try:
            if not self.channel:
                self.channel = await self.layer.new_channel()
            for group in self.groups:
                await self.layer.group_add(group, self.channel)
        except LAYER_ERRORS as exc:
            if not self._lost:
                logger.warning("channel layer away (%r): reading the database instead", exc)
            self.up, self._lost = False, True
            return
        if self._lost:
            logger.info("channel layer back: listening to %s again", ", ".join(self.groups))
        self.up, self._lost = True, False

    async def next(self, timeout: float) -> dict[str, Any] | None:
        """The next message, or None after ``timeout`` seconds without one (or, while the layer
        is away, after a short sleep): look at the database then."""
        if not self.up:
            if asyncio.get_running_loop().time() >= self._next_try:
                await self._join()
            if not self.up:
                await asyncio.sleep(self.POLL_SECONDS)
                return None
        try:
            message: dict[str, Any] = await asyncio.wait_for(
                self.layer.receive(self.channel), timeout
            )
        except TimeoutError:
            return None
        except LAYER_ERRORS as exc:
            logger.warning("channel layer lost (%r): reading the database instead", exc)
            self.up, self._lost = False, True
            self._next_try = asyncio.get_running_loop().time() + self.REJOIN_SECONDS
            return None
        return message
