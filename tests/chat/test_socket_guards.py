"""The chat socket's guards: bad actions, malformed and oversized frames, and floods each get an
error event, write nothing, and leave the socket (and other users) working."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from apps.inference.models import Generation
from tests.factories import ConversationFactory

from .conftest import communicator
from .test_consumers import receive_until, rows

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("inline_worker")]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"action": "send", "text": "   "}, "Type a message first."),
        ({"action": "send"}, "Type a message first."),
        (
            {"action": "send", "text": "x" * 32_001},
            "The message has 32001 characters; the limit is 32000. Shorten it.",
        ),
        (
            {"action": "send", "text": "a\u0000b"},
            "The message contains a NUL character, which text cannot hold; remove it.",
        ),
        ({"action": "send", "text": 42}, "Type a message first."),
        ({"action": "dance"}, "Unknown action; use send, stop, regenerate, rerun or edit."),
        (["send", "hello"], "Unknown action; use send, stop, regenerate, rerun or edit."),
        ({"action": "regenerate"}, "There is nothing to regenerate yet."),
    ],
)
async def test_bad_input_gets_an_error_and_writes_nothing(owner, conversation, payload, message):
    ws = await communicator(owner, conversation.pk)
    await ws.connect()
    await ws.send_json_to(payload)
    assert await ws.receive_json_from(timeout=5) == {"type": "error", "message": message}
    assert await rows(conversation) == []
    assert await database_sync_to_async(Generation.objects.count)() == 0
    await ws.disconnect()


async def test_frames_that_are_not_json_or_too_large_get_an_error_and_the_socket_stays(
    owner, conversation, settings
):
    ws = await communicator(owner, conversation.pk)
    await ws.connect()
    await ws.send_to(text_data="send hello")
    error = await ws.receive_json_from(timeout=5)
    assert error == {
        "type": "error",
        "message": 'Send JSON, such as {"action": "send", "text": "Hi"}.',
    }
    await ws.send_to(bytes_data=b"\x00\x01")
    assert (await ws.receive_json_from(timeout=5))["message"] == "Send text frames of JSON."
    limit = 6 * settings.CHAT_MAX_MESSAGE_CHARS + 1_000
    await ws.send_to(text_data=" " * (limit + 1))
    assert (await ws.receive_json_from(timeout=5))["message"] == (
        f"The frame has {limit + 1} characters; the limit is {limit}."
    )
    assert await rows(conversation) == []
    # Still open and working.
    await ws.send_json_to({"action": "send", "text": "Hello"})
    events = await receive_until(ws, "done")
    assert [e["type"] for e in events][:2] == ["message", "message"]
    await ws.disconnect()


async def test_a_flood_of_frames_is_refused_and_other_users_are_unaffected(
    owner, conversation, stranger, chat_model
):
    theirs = await database_sync_to_async(ConversationFactory)(owner=stranger)
    flood = await communicator(owner, conversation.pk)
    await flood.connect()
    for _ in range(25):
        await flood.send_json_to({"action": "dance"})
    replies = [(await flood.receive_json_from(timeout=5))["message"] for _ in range(25)]
    assert replies.count("Unknown action; use send, stop, regenerate, rerun or edit.") == 20
    assert replies.count("Too many messages at once; wait a moment.") == 5

    other = await communicator(stranger, theirs.pk)
    await other.connect()
    await other.send_json_to({"action": "send", "text": "Hello"})
    events = await receive_until(other, "done")
    assert any(e["type"] == "delta" for e in events) or events[-1]["type"] == "done"
    await other.disconnect()
    await flood.disconnect()
