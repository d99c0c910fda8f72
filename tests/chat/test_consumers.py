"""The chat WebSocket through the whole ASGI stack, with a real Celery worker on Redis.

The worker runs the fake engine here (fast, deterministic: it echoes the message word by word);
tests/test_end_to_end.py runs the same path with the real model in a separate worker process.
"""

from __future__ import annotations

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


def joined(events, generation):
    """The text the deltas of ``generation`` add up to; each begins where the last one ended."""
    text = ""
    for event in events:
        if event["type"] == "delta" and event["generation"] == generation:
            assert event["offset"] == len(text)
            text += event["text"]
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
    assert [e["type"] for e in events[:4]] == ["message", "message", "conversation", "delta"]
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


async def test_stop_cancels_within_a_few_steps_and_keeps_the_partial_answer(owner, conversation):
    ws = await communicator(owner, conversation.pk)
    await ws.connect()
    await ws.send_json_to({"action": "send", "text": LONG_TEXT})
    events = await receive_until(ws, "delta")
    generation = events[-1]["generation"]
    before = await database_sync_to_async(Generation.objects.get)(pk=generation)
    await ws.send_json_to({"action": "stop"})
    events += await receive_until(ws, "done", timeout=5)
    row = await database_sync_to_async(Generation.objects.get)(pk=generation)
    assert row.status == Generation.Status.CANCELLED
    assert row.finish_reason == "cancelled"
    assert row.output == joined(events, generation)
    # The worker looks for a stop every CANCEL_POLL_SECONDS (0.2 s), the engine between steps
    # of 20 ms: words written after the stop are a handful, however slow the machine.
    written_after = len(row.output.split()) - len(before.output.split())
    assert len(row.output) > 0 and written_after < 20
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
    # The new socket's first delta carries all the text so far.
    assert (resumed[0]["type"], resumed[0]["generation"], resumed[0]["offset"]) == (
        "delta",
        generation,
        0,
    )
    assert resumed[0]["text"].startswith(joined(events, generation))
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


async def test_a_second_message_waits_for_the_answer_in_flight(owner, conversation):
    ws = await communicator(owner, conversation.pk)
    await ws.connect()
    await ws.send_json_to({"action": "send", "text": LONG_TEXT})
    await receive_until(ws, "delta")
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
