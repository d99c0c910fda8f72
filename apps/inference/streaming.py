"""Live deltas travel through the channel layer, one group per generation.

Event types (consumers implement the handlers ``generation_delta`` and ``generation_done``):
- ``generation.delta``: ``{"generation", "offset", "text"}``; ``offset`` is where ``text`` starts in
  the output. The worker writes the output to the database before it publishes a delta, so a reader
  who joins the group and then reads the row misses nothing.
- ``generation.done``: ``{"generation", "status"}`` once the row holds the final state.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer


def generation_group(generation_id: object) -> str:
    return f"generation.{generation_id}"


def publish(generation_id: object, event: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is not None:
        async_to_sync(layer.group_send)(generation_group(generation_id), event)
