"""The chat WebSocket through the whole ASGI stack, with a real Celery worker on Redis.

The worker runs the fake engine here (fast, deterministic: it echoes the message word by word);
tests/test_end_to_end.py runs the same path with the real model in a separate worker process.
"""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async

from apps.chat.models import Message
from apps.inference.models import Generation

from .conftest import communicator

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("inline_worker")]

LONG_TEXT = " ".join(f"w{i}" for i in range(300))  # 300 steps of 20 ms: 6 s if not stopped


async def receive_until(ws, kind, *, timeout=10.0):
    """Events up to and including the first of type ``kind``."""
    events = []
    while True:
        event = await ws.receive_json_from(timeout=timeout)
        events.append(event)
        if event["type"] == kind:
            return events


def joined(events, generation, start=""):
    text = start
    for event in events:
        if event["type"] == "snapshot" and event["generation"] == generation:
            text = event["text"] if len(event["text"]) >= len(text) else text
        elif event["type"] == "delta" and event["generation"] == generation:
            assert event["offset"] <= len(text)
            text = text[: event["offset"]] + event["text"]
    return text


@database_sync_to_async
def rows(conversation):
    return list(conversation.messages.select_related("generation").order_by("id"))


async def test_send_streams_the_answer_and_stores_it(owner, conversation):
    conversation.title = ""
    await database_sync_to_async(conversation.save)()
    ws = await communicator(owner, conversation.pk)
    connected, _ = await ws.connect()
    assert connected
    await ws.send_json_to({"action": "send", "text": "hello there friend"})
    events = await receive_until(ws, "done")
    assert [e["type"] for e in events[:4]] == ["message", "message", "conversation", "snapshot"]
    assert "hello there friend" in events[0]["html"]
    # The first message names the conversation, and the sidebar entry follows.
    assert events[2]["title"] == "hello there friend"
    assert f'id="conv-{conversation.pk}"' in events[2]["html"]
    assert ">hello there friend</a>" in events[2]["html"]
    generation = events[3]["generation"]
    deltas = [e for e in events if e["type"] == "delta"]
    assert len(deltas) >= 2  # it streamed, not one lump
    assert joined(events, generation) == "Echo: hello there friend"
    assert "<p>Echo: hello there friend</p>" in events[-1]["html"]
    user_msg, answer = await rows(conversation)
    assert (user_msg.role, user_msg.content) == ("user", "hello there friend")
    assert answer.generation_id is not None and str(answer.generation_id) == generation
    assert answer.generation.status == Generation.Status.SUCCEEDED
    assert answer.generation.output == "Echo: hello there friend"
    assert answer.generation.completion_tokens == 4
    assert answer.generation.prompt_tokens == 3
    assert answer.generation.ttft_ms is not None
    assert answer.generation.params["max_tokens"] == 512
    await ws.disconnect()


async def test_stop_cancels_within_a_second_and_keeps_the_partial_answer(owner, conversation):
    ws = await communicator(owner, conversation.pk)
    await ws.connect()
    await ws.send_json_to({"action": "send", "text": LONG_TEXT})
    events = await receive_until(ws, "delta")
    generation = events[-1]["generation"]
    loop = asyncio.get_running_loop()
    stopped_at = loop.time()
    await ws.send_json_to({"action": "stop"})
    events += await receive_until(ws, "done", timeout=5)
    assert loop.time() - stopped_at < 1.0
    row = await database_sync_to_async(Generation.objects.get)(pk=generation)
    assert row.status == Generation.Status.CANCELLED
    assert row.finish_reason == "cancelled"
    assert row.output == joined(events, generation)
    assert 0 < len(row.output) < len("Echo: " + LONG_TEXT)
    assert "stopped" in events[-1]["html"]
    await ws.disconnect()


async def test_reconnecting_mid_answer_shows_the_text_so_far_and_keeps_streaming(
    owner, conversation
):
    first = await communicator(owner, conversation.pk)
    await first.connect()
    await first.send_json_to({"action": "send", "text": " ".join(f"w{i}" for i in range(60))})
    events = await receive_until(first, "delta")
    for _ in range(5):
        events += await receive_until(first, "delta")
    generation = events[-1]["generation"]
    await first.disconnect()

    second = await communicator(owner, conversation.pk)
    connected, _ = await second.connect()
    assert connected
    resumed = await receive_until(second, "done")
    assert resumed[0]["type"] == "snapshot" and resumed[0]["generation"] == generation
    assert len(resumed[0]["text"]) >= len(joined(events, generation))
    row = await database_sync_to_async(Generation.objects.get)(pk=generation)
    assert (
        joined(resumed, generation) == row.output == "Echo: " + " ".join(f"w{i}" for i in range(60))
    )
    await second.disconnect()


async def test_another_user_is_refused_and_nothing_is_written(stranger, conversation):
    ws = await communicator(stranger, conversation.pk)
    connected, _ = await ws.connect()
    assert not connected
    anonymous = await communicator(None, conversation.pk)
    connected, _ = await anonymous.connect()
    assert not connected
    assert await rows(conversation) == []


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


async def test_a_second_message_waits_for_the_answer_in_flight(owner, conversation):
    ws = await communicator(owner, conversation.pk)
    await ws.connect()
    await ws.send_json_to({"action": "send", "text": LONG_TEXT})
    await receive_until(ws, "snapshot")
    await ws.send_json_to({"action": "send", "text": "another"})
    error = await receive_until(ws, "error")
    assert error[-1]["message"] == "An answer is still being written: wait for it or stop it first."
    await ws.send_json_to({"action": "stop"})
    await receive_until(ws, "done")
    assert [m.role for m in await rows(conversation)] == ["user", "assistant"]
    await ws.disconnect()


async def test_regenerate_replaces_the_last_answer(owner, conversation):
    ws = await communicator(owner, conversation.pk)
    await ws.connect()
    await ws.send_json_to({"action": "send", "text": "once more"})
    first = await receive_until(ws, "done")
    await ws.send_json_to({"action": "regenerate"})
    second = await receive_until(ws, "done")
    old_answer = [e for e in first if e["type"] == "message"][1]
    assert second[0]["type"] == "message" and second[0]["replaces"] is not None
    assert f'id="message-{second[0]["replaces"]}"' in old_answer["html"]
    messages = await rows(conversation)
    assert [m.role for m in messages] == ["user", "assistant"]
    assert messages[1].generation.output == "Echo: once more"
    assert str(messages[1].generation_id) == second[-1]["generation"]
    # The replaced generation stays on record (usage), detached from the thread.
    assert await database_sync_to_async(Generation.objects.count)() == 2
    await ws.disconnect()


async def test_run_again_repeats_the_last_answer_with_its_version_parameters_and_seed(
    owner, conversation
):
    ws = await communicator(owner, conversation.pk)
    await ws.connect()
    await ws.send_json_to({"action": "send", "text": "same again"})
    await receive_until(ws, "done")
    first = (await rows(conversation))[1].generation
    assert isinstance(first.params["seed"], int)  # every answer records its seed
    assert f"seed {first.params['seed']}" in (await rendered_last_answer(conversation))
    await ws.send_json_to({"action": "regenerate"})
    await receive_until(ws, "done")
    regenerated = (await rows(conversation))[1].generation
    await ws.send_json_to({"action": "rerun"})
    events = await receive_until(ws, "done")
    assert events[0]["type"] == "message" and events[0]["replaces"] is not None
    again = (await rows(conversation))[1].generation
    assert again.pk != regenerated.pk
    assert again.params == regenerated.params  # the seed included
    assert again.model_version_id == regenerated.model_version_id
    assert again.output == regenerated.output
    await ws.disconnect()


@database_sync_to_async
def rendered_last_answer(conversation):
    from django.template.loader import render_to_string

    answer = conversation.messages.select_related("generation__model_version__model").last()
    return render_to_string("chat/conversation.html#message", {"message": answer})


async def test_editing_a_past_message_replaces_the_turns_after_it(owner, stranger, conversation):
    ws = await communicator(owner, conversation.pk)
    await ws.connect()
    for text in ("first question", "second question"):
        await ws.send_json_to({"action": "send", "text": text})
        await receive_until(ws, "done")
    first_user, first_answer, second_user, second_answer = await rows(conversation)

    # Bad edits change nothing: an answer's id, empty text, another conversation's message.
    for bad in (
        {"message": first_answer.pk, "text": "x"},
        {"message": first_user.pk, "text": "  "},
        {"message": "nope", "text": "x"},
    ):
        await ws.send_json_to({"action": "edit", **bad})
        assert (await ws.receive_json_from(timeout=5))["type"] == "error"
    assert len(await rows(conversation)) == 4

    await ws.send_json_to({"action": "edit", "message": first_user.pk, "text": "edited question"})
    events = await receive_until(ws, "done")
    assert events[0] == {
        "type": "removed",
        "messages": [first_answer.pk, second_user.pk, second_answer.pk],
    }
    assert events[1]["replaces"] == first_user.pk and "edited question" in events[1]["html"]
    messages = await rows(conversation)
    assert [(m.role, m.text) for m in messages] == [
        ("user", "edited question"),
        ("assistant", "Echo: edited question"),
    ]
    # The replaced answers' generations stay on record for usage.
    assert await database_sync_to_async(Generation.objects.count)() == 3
    await ws.disconnect()


async def test_a_failed_answer_shows_the_reason_and_can_be_retried(owner, conversation):
    ws = await communicator(owner, conversation.pk)
    await ws.connect()
    await ws.send_json_to({"action": "send", "text": "please [fail] now"})
    events = await receive_until(ws, "done")
    assert "The answer failed: The fake model failed on purpose." in events[-1]["html"]
    assert 'data-action="regenerate"' in events[-1]["html"]
    failed = (await rows(conversation))[1].generation
    assert (failed.status, failed.error_code) == ("failed", "internal_error")

    # The engine failure did not take the worker down: a retry is served.
    @database_sync_to_async
    def edit_question():
        Message.objects.filter(conversation=conversation, role="user").update(content="fixed")

    await edit_question()
    await ws.send_json_to({"action": "regenerate"})
    events = await receive_until(ws, "done")
    assert "<p>Echo: fixed</p>" in events[-1]["html"]
    await ws.disconnect()


async def test_a_used_up_token_quota_refuses_the_message_and_writes_nothing(
    owner, conversation, chat_model
):
    from apps.inference.models import UsageRecord

    @database_sync_to_async
    def use_up():
        owner.daily_token_quota = 10
        owner.save()
        UsageRecord.objects.create(
            user=owner,
            model=chat_model,
            source="chat",
            kind="chat",
            prompt_tokens=8,
            completion_tokens=2,
        )

    await use_up()
    ws = await communicator(owner, conversation.pk)
    await ws.connect()
    await ws.send_json_to({"action": "send", "text": "hello"})
    error = await ws.receive_json_from(timeout=5)
    assert error["type"] == "error"
    assert error["message"].startswith("Daily token quota reached: 10 of 10 tokens used today")
    assert await rows(conversation) == []
    await ws.disconnect()


async def test_chat_usage_is_metered(owner, conversation):
    from apps.inference.models import UsageRecord

    ws = await communicator(owner, conversation.pk)
    await ws.connect()
    await ws.send_json_to({"action": "send", "text": "count me"})
    await receive_until(ws, "done")
    record = await database_sync_to_async(UsageRecord.objects.get)(user=owner)
    assert (record.source, record.kind, record.api_key_id) == ("chat", "chat", None)
    assert (record.prompt_tokens, record.completion_tokens) == (2, 3)
    await ws.disconnect()


async def test_a_send_uses_settings_changed_after_the_socket_opened(owner, conversation):
    ws = await communicator(owner, conversation.pk)
    await ws.connect()

    @database_sync_to_async
    def change_settings():
        from apps.chat.models import Conversation

        Conversation.objects.filter(pk=conversation.pk).update(
            title="Renamed in another tab", temperature=0.1, max_tokens=7
        )

    await change_settings()
    await ws.send_json_to({"action": "send", "text": "settings please"})
    events = await receive_until(ws, "done")
    answer = (await rows(conversation))[1]
    assert (answer.generation.params["temperature"], answer.generation.params["max_tokens"]) == (
        0.1,
        7,
    )
    await database_sync_to_async(conversation.refresh_from_db)()
    assert conversation.title == "Renamed in another tab"
    assert events[2]["title"] == "Renamed in another tab"
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
    from apps.chat.models import Conversation

    theirs = await database_sync_to_async(Conversation.objects.create)(
        owner=stranger, model=chat_model
    )
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
