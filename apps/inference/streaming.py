"""Reading answers as they are written: the one stream reader every client uses (the chat socket,
the compare and completion panes, the API's SSE and JSON answers, embeddings).

Workers publish to one channel-layer group per work record (``stream_group``:
``generation.<id>``, ``embeddingbatch.<id>``):
- ``stream.delta`` ``{"id", "offset", "text"}``: ``offset`` is where ``text`` starts in the
  output. The worker writes the output to the database before it publishes a delta, so a reader
  who joins the group and then reads the row misses nothing. A generation that keeps
  log-probabilities adds ``"logprobs": [offset, entries]``: the new entries of its ``logprobs``
  list and where they start in it.
- ``stream.done`` ``{"id", "status"}``, once the row holds the final state.

The channel layer only makes streams fast; the database row is the record. ``follow`` reconciles
offsets itself, reads the rows on a quiet spell, and reads them instead while the layer is away
(a Redis restart), so what it yields for a record always adds up to its stored output.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async

from apps.core.channel_layers import Listener, publish_to
from apps.core.models import Worker, WorkRecord
from apps.core.queues import Queue

_NO_LOGPROBS: tuple[dict[str, Any], ...] = ()

# How long a follower waits for a message before it looks at the database itself.
RECHECK_SECONDS = 5.0


def stream_group(model: type[WorkRecord], work_id: object) -> str:
    return f"{model._meta.model_name}.{work_id}"


def publish_delta(
    model: type[WorkRecord],
    work_id: object,
    offset: int,
    text: str,
    *,
    logprobs: tuple[int, list[dict[str, Any]]] | None = None,
) -> None:
    """From the worker, after the row holds the text (best effort: see the module's doc)."""
    event: dict[str, Any] = {"type": "stream.delta", "id": str(work_id), "offset": offset}
    event["text"] = text
    if logprobs and logprobs[1]:
        event["logprobs"] = list(logprobs)
    publish_to(stream_group(model, work_id), event)


def publish_done(model: type[WorkRecord], work_id: object, status: str) -> None:
    """From the worker (or a reaper), after the row holds its final state."""
    event = {"type": "stream.done", "id": str(work_id), "status": status}
    publish_to(stream_group(model, work_id), event)


@dataclass(frozen=True)
class Delta:
    """New text of record ``id``, starting at ``offset`` in its output (the first one a reader
    gets carries all the text so far, at offset 0), and the log-probability entries of the
    tokens since the last delta, for a generation that keeps them."""

    id: str
    offset: int
    text: str
    logprobs: tuple[dict[str, Any], ...] = _NO_LOGPROBS


@dataclass(frozen=True)
class Waiting:
    """Record ``id`` waits for a worker (``True``: no live worker serves its queue now), or has
    one again (``False``)."""

    id: str
    waiting: bool


@dataclass(frozen=True)
class Done:
    """Record ``id`` has finished: ``row`` holds its final state and figures."""

    id: str
    row: Any


Event = Delta | Waiting | Done


async def follow(
    model: type[WorkRecord], ids: list[str], *, queue: str = Queue.INFERENCE
) -> AsyncGenerator[Event]:
    """Stream the text and the end of the ``model`` records ``ids`` (generations, or records
    without text such as embedding batches, which yield only ``Done``), from outside the worker.

    Yields ``Delta``s that add up to each record's stored output, ``Waiting`` when a record in
    flight has no live worker serving ``queue`` (and when it has one again), and one ``Done``
    per record, last for it.
    """

    def look() -> tuple[dict[str, Any], bool]:
        rows = {str(r.pk): r for r in model._default_manager.filter(pk__in=ids)}
        in_flight = any(not r.is_finished for r in rows.values())
        return rows, in_flight and not Worker.objects.serving(queue)

    sent = dict.fromkeys(ids, 0)
    sent_logprobs = dict.fromkeys(ids, 0)  # entries of each record's ``logprobs`` yielded
    pending = set(ids)
    waiting = False
    async with Listener([stream_group(model, i) for i in ids]) as listener:
        recheck = True  # first look: text may have been written before the groups were joined
        while pending:
            if recheck:
                recheck = False
                rows, no_worker = await database_sync_to_async(look)()
                for work_id in ids:
                    row = rows.get(work_id)
                    if work_id not in pending or row is None:
                        continue
                    output = getattr(row, "output", "")
                    entries = getattr(row, "logprobs", None) or ()
                    if len(output) > sent[work_id] or len(entries) > sent_logprobs[work_id]:
                        new = tuple(entries[sent_logprobs[work_id] :])
                        yield Delta(work_id, sent[work_id], output[sent[work_id] :], new)
                        sent[work_id] = len(output)
                        sent_logprobs[work_id] = len(entries)
                    if row.is_finished:
                        pending.discard(work_id)
                        yield Done(work_id, row)
                if pending and no_worker != waiting:
                    waiting = no_worker
                    for work_id in sorted(pending):
                        yield Waiting(work_id, waiting)
                continue
            message = await listener.next(RECHECK_SECONDS)
            if message is None:
                recheck = True  # a quiet spell, or the layer is away: read the rows
                continue
            work_id = str(message.get("id"))
            if work_id not in pending:
                continue
            if message["type"] != "stream.delta":
                recheck = True  # finished: the row has the final text and figures
                continue
            start, text = message["offset"], message["text"]
            entries_at, entries = message.get("logprobs") or (sent_logprobs[work_id], [])
            old_text = start + len(text) <= sent[work_id]
            if old_text and entries_at + len(entries) <= sent_logprobs[work_id]:
                continue
            if start > sent[work_id] or entries_at > sent_logprobs[work_id]:
                recheck = True  # a delta went missing
                continue
            if waiting:  # a worker writes again
                waiting = False
                for other in sorted(pending):
                    yield Waiting(other, False)
            new = tuple(entries[sent_logprobs[work_id] - entries_at :])
            yield Delta(work_id, sent[work_id], text[sent[work_id] - start :], new)
            sent[work_id] = max(sent[work_id], start + len(text))
            sent_logprobs[work_id] = max(sent_logprobs[work_id], entries_at + len(entries))


async def finished(model: type[WorkRecord], work_id: object) -> Any:
    """Wait until the record ``work_id`` of ``model`` has finished, and return its row."""
    async for event in follow(model, [str(work_id)]):
        if isinstance(event, Done):
            return event.row
    raise AssertionError("follow ended without the record's end")  # pragma: no cover
