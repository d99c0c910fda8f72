"""The production shape end to end: the real packaged model in a separate `celery worker` process,
Postgres, Redis as broker and channel layer, and the chat WebSocket through the ASGI stack."""

from __future__ import annotations

import json

import pytest
from channels.db import database_sync_to_async

from apps.inference.models import Generation
from tests.chat.conftest import communicator
from tests.chat.test_consumers import joined, receive_until
from tests.factories import ConversationFactory


@pytest.mark.model
@pytest.mark.django_db(transaction=True)
async def test_the_packaged_model_answers_through_a_real_worker(real_worker, owner, chat_model):
    conversation = await database_sync_to_async(ConversationFactory)(
        owner=owner, temperature=0.0, max_tokens=32
    )
    ws = await communicator(owner, conversation.pk)
    assert (await ws.connect())[0]
    await ws.send_json_to({"action": "send", "text": "Name the capital of France."})
    events = await receive_until(ws, "done", timeout=120)
    generation_id = events[-1]["generation"]
    generation = await database_sync_to_async(Generation.objects.get)(pk=generation_id)

    streamed = joined(events, generation_id)
    assert generation.status == Generation.Status.SUCCEEDED
    assert streamed == generation.output
    assert "Paris" in generation.output
    # Streamed, not sent whole: the first text at once, the rest paced by the engine.
    assert len([e for e in events if e["type"] == "delta"]) >= 2
    assert generation.prompt_tokens > 10 and 0 < generation.completion_tokens <= 32
    assert generation.ttft_ms is not None and generation.tokens_per_second > 0
    assert generation.params["temperature"] == 0.0
    assert "Paris" in events[-1]["html"] and "tok/s" in events[-1]["html"]

    # With a JSON schema in the settings, the answer is JSON valid against it, shown formatted.
    conversation.json_schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
        "required": ["city", "country"],
        "additionalProperties": False,
    }
    conversation.max_tokens = 64
    await database_sync_to_async(conversation.save)()
    await ws.send_json_to({"action": "send", "text": "Where is the Eiffel Tower?"})
    events = await receive_until(ws, "done", timeout=120)
    generation = await database_sync_to_async(Generation.objects.get)(pk=events[-1]["generation"])
    assert generation.finish_reason == "stop"
    assert list(json.loads(generation.output)) == ["city", "country"]
    assert (
        '<pre class="body json"><code class="language-json">{\n  &quot;city&quot;'
        in (events[-1]["html"])
    )
    await ws.disconnect()
