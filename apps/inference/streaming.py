"""Live deltas travel through the channel layer, one group per generation.

Event types (consumers implement the handlers ``generation_delta`` and ``generation_done``):
- ``generation.delta``: ``{"generation", "offset", "text"}``; ``offset`` is where ``text`` starts in
  the output. The worker writes the output to the database before it publishes a delta, so a reader
  who joins the group and then reads the row misses nothing.
- ``generation.done``: ``{"generation", "status"}`` once the row holds the final state.

The channel layer only makes streams fast; the database row is the record. Publishing is best
effort, and a follower whose channel layer fails (Redis restarting) goes on by reading the row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncGenerator, Callable
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from apps.core.channel_layers import LAYER_ERRORS

logger = logging.getLogger(__name__)

# How long a follower waits for a message before it looks at the database itself.
RECHECK_SECONDS = 5.0
# How often a follower without a channel layer reads the row instead.
POLL_SECONDS = 0.5


def generation_group(generation_id: object) -> str:
    return f"generation.{generation_id}"


def publish(generation_id: object, event: dict[str, Any]) -> None:
    publish_to(generation_group(generation_id), event)


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


async def follow(generation_ids: list[str]) -> AsyncGenerator[tuple[str, str, Any]]:
    """Stream the text of running generations, from outside the worker (views, API).

    Yields ``("text", id, new_text)`` and, once per generation, ``("done", id, row)`` with the
    finished Generation row. The text yielded for a generation always adds up to its stored output,
    even when a delta was lost on the way: the row is the record, the deltas only make it fast.
    """
    from .models import Generation

    def rows() -> dict[str, Generation]:
        found = Generation.objects.filter(pk__in=generation_ids)
        return {str(g.pk): g for g in found}

    layer = get_channel_layer()
    channel = await layer.new_channel()
    groups = [generation_group(generation_id) for generation_id in generation_ids]
    layer_up = await _join(layer, groups, channel)
    sent = dict.fromkeys(generation_ids, 0)
    pending = set(generation_ids)
    recheck = True  # first look: text may have been written before we joined the groups
    try:
        while pending:
            if recheck:
                recheck = False
                for generation_id, row in (await database_sync_to_async(rows)()).items():
                    if generation_id not in pending:
                        continue
                    if len(row.output) > sent[generation_id]:
                        yield "text", generation_id, row.output[sent[generation_id] :]
                        sent[generation_id] = len(row.output)
                    if row.is_finished:
                        pending.discard(generation_id)
                        yield "done", generation_id, row
                continue
            if not layer_up:
                await asyncio.sleep(POLL_SECONDS)
                recheck = True
                continue
            try:
                message = await asyncio.wait_for(layer.receive(channel), RECHECK_SECONDS)
            except TimeoutError:
                recheck = True  # a quiet spell: make sure nothing was missed
                continue
            except LAYER_ERRORS as exc:
                logger.warning("channel layer lost (%r): reading the rows instead", exc)
                layer_up, recheck = False, True
                continue
            generation_id = message["generation"]
            if generation_id not in pending:
                continue
            if message["type"] != "generation.delta":
                recheck = True  # finished: the row has the final text and figures
                continue
            start, text = message["offset"], message["text"]
            if start + len(text) <= sent[generation_id]:
                continue
            if start > sent[generation_id]:
                recheck = True  # a delta went missing
                continue
            yield "text", generation_id, text[sent[generation_id] - start :]
            sent[generation_id] = start + len(text)
    finally:
        await _leave(layer, groups, channel)


async def _join(layer: Any, groups: list[str], channel: str) -> bool:
    """Add ``channel`` to ``groups``; False (and logged) when the layer is down."""
    try:
        for group in groups:
            await layer.group_add(group, channel)
    except LAYER_ERRORS as exc:
        logger.warning("channel layer down (%r): reading the rows instead", exc)
        return False
    return True


async def _leave(layer: Any, groups: list[str], channel: str) -> None:
    with contextlib.suppress(*LAYER_ERRORS):  # a restarted Redis has forgotten them anyway
        for group in groups:
            await layer.group_discard(group, channel)


def embedding_group(batch_id: object) -> str:
    return f"embedding.{batch_id}"


async def wait_finished(group: str, load: Callable[[], Any]) -> Any:
    """Wait until ``load()`` (a sync function returning a row with ``is_finished``) reports the
    row finished. A message on ``group`` wakes the waiter early; the database decides."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    layer_up = await _join(layer, [group], channel)
    try:
        while True:
            row = await database_sync_to_async(load)()
            if row.is_finished:
                return row
            if not layer_up:
                await asyncio.sleep(POLL_SECONDS)
                continue
            try:
                await asyncio.wait_for(layer.receive(channel), RECHECK_SECONDS)
            except TimeoutError:
                pass
            except LAYER_ERRORS as exc:
                logger.warning("channel layer lost (%r): reading the row instead", exc)
                layer_up = False
    finally:
        await _leave(layer, [group], channel)
