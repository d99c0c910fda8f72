"""The one stream reader (``apps.inference.streaming.follow``) with log-probability entries: what
it yields adds up to the row's, from the layer's messages and, where one went missing, from the
row itself."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async

from apps.inference.models import Generation
from apps.inference.streaming import Delta, Done, follow, publish_delta, publish_done
from tests.factories import GenerationFactory

pytestmark = pytest.mark.django_db(transaction=True)


def entry(token: str) -> dict:
    return {"token": token, "logprob": -0.5, "bytes": list(token.encode()), "top_logprobs": []}


@database_sync_to_async
def write(generation: Generation, text: str, tokens: list[str], *, finished: bool = False):
    """Append to the row as the worker does (before it publishes); ``tokens``: one per letter."""
    offset, at = len(generation.output), len(generation.logprobs or [])
    generation.output += text
    generation.logprobs = [*(generation.logprobs or []), *map(entry, tokens)]
    fields = ["output", "logprobs"]
    if finished:
        generation.status = Generation.Status.SUCCEEDED
        fields.append("status")
    generation.save(update_fields=fields)
    return offset, at


async def test_follow_yields_every_entry_once_from_messages_or_the_row():
    generation = await database_sync_to_async(GenerationFactory)(
        status=Generation.Status.RUNNING, params={"logprobs": 0}
    )
    await write(generation, "ab", ["a", "b"])  # before the reader came
    events = follow(Generation, [str(generation.pk)])

    async def delta() -> Delta:
        while not isinstance(event := await asyncio.wait_for(anext(events), 10), Delta):
            pass  # (no worker runs here: Waiting says so)
        return event

    seen = [await delta()]
    offset, at = await write(generation, "c", ["c"])
    publish_delta(Generation, generation.pk, offset, "c", logprobs=(at, [entry("c")]))
    seen.append(await delta())
    await write(generation, "d", ["d"])  # its message is lost
    offset, at = await write(generation, "e", ["e"], finished=True)
    publish_delta(Generation, generation.pk, offset, "e", logprobs=(at, [entry("e")]))
    publish_done(Generation, generation.pk, Generation.Status.SUCCEEDED)
    async for event in events:
        if isinstance(event, Done):
            break
        if isinstance(event, Delta):  # (no worker runs here: Waiting says so)
            seen.append(event)
    assert "".join(d.text for d in seen) == "abcde"
    assert [e["token"] for d in seen for e in d.logprobs] == ["a", "b", "c", "d", "e"]
