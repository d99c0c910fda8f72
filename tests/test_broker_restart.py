"""Redis restarted mid-stream, with the production shape around it: a `manage.py serve` process
and a `celery worker` with the packaged model, both on a redis-server of the test's own that
keeps nothing on disk, so the restart loses every queued message and every channel-layer group.

What must hold: open streams go on to their end (the chat socket and the API's stream both read
the database while the channel layer is away), with exactly the stored text; requests during the
outage get 503 with Retry-After; work queued before the restart is still answered; new chats
work afterwards, and nothing was restarted but Redis.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest
import websockets
from asgiref.sync import sync_to_async

from apps.inference.models import Generation
from tests.chat.conftest import session_cookie
from tests.conftest import celery_worker, child_database_url
from tests.factories import ConversationFactory
from tests.helpers import ROOT, Process, RedisServer, child_env, free_port, wait_for

pytestmark = [pytest.mark.model, pytest.mark.django_db(transaction=True)]

LONG = "Count from 1 to 300, separated by commas."


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def platform(redis_server, tmp_path) -> Iterator[str]:
    """The web process and one inference worker (two answers at a time, so that a third one
    waits in Redis), both on ``redis_server``. The worker sends lost messages again after 2 s."""
    port = free_port()
    web = Process(
        [str(ROOT / ".venv/bin/python"), "manage.py", "serve", "--port", str(port)],
        env=child_env(DATABASE_URL=child_database_url(), REDIS_URL=redis_server.url),
        log=tmp_path / "server.log",
    )
    worker = None
    try:
        url = f"http://127.0.0.1:{port}"
        web.wait_for_http(f"{url}/healthz", timeout=60)
        worker = celery_worker(
            "inference",
            tmp_path,
            name="broker-restart@tests",
            concurrency=2,
            REDIS_URL=redis_server.url,
            REQUEUE_SECONDS="2",
        )
        yield url
    finally:
        if worker is not None:
            worker.stop()
        web.stop()


def test_a_redis_restart_mid_stream_loses_nothing(platform, redis_server, owner, api_key, tmp_path):
    headers = {"Authorization": f"Bearer {api_key}"}
    chat = ConversationFactory(owner=owner, temperature=0, max_tokens=300)
    later = ConversationFactory(owner=owner, max_tokens=16)
    cookie = session_cookie(owner).decode()
    ws_headers = {"Cookie": cookie, "Origin": platform}
    ws_base = platform.replace("http", "ws")

    def generations(**filters: object) -> list[Generation]:
        return list(Generation.objects.filter(user=owner, **filters).order_by("created_at"))

    async def scenario() -> dict[str, object]:
        seen: dict[str, object] = {}
        async with httpx.AsyncClient(base_url=platform, headers=headers, timeout=180) as api:

            async def sse_stream() -> tuple[str, list[str]]:
                text, tail = "", []
                body = {
                    "model": "smollm2-135m-instruct",
                    "messages": [{"role": "user", "content": LONG}],
                    "temperature": 0,
                    "max_tokens": 300,
                    "stream": True,
                }
                async with api.stream("POST", "/v1/chat/completions", json=body) as response:
                    assert response.status_code == 200
                    async for line in response.aiter_lines():
                        if not line.startswith("data: "):
                            continue
                        data = line.removeprefix("data: ")
                        tail.append(data)
                        if data != "[DONE]" and "choices" in json.loads(data):
                            for choice in json.loads(data)["choices"]:
                                text += choice["delta"].get("content") or ""
                        seen["sse_chars"] = len(text)
                return text, tail[-2:]

            sse = asyncio.create_task(sse_stream())
            socket = await websockets.connect(
                f"{ws_base}/ws/chat/{chat.pk}/", additional_headers=ws_headers
            )
            await socket.send(json.dumps({"action": "send", "text": LONG}))
            streamed = ""

            async def read_socket() -> dict[str, object]:
                nonlocal streamed
                event = json.loads(await asyncio.wait_for(socket.recv(), 120))
                if event["type"] == "delta":
                    assert event["offset"] == len(streamed)  # contiguous, reconciled server-side
                    streamed += event["text"]
                return event

            while len(streamed) < 20 or seen.get("sse_chars", 0) < 20:
                await read_socket()
            # Both workers' threads are busy: a third request waits in Redis.
            queued = asyncio.create_task(
                api.post(
                    "/v1/chat/completions",
                    json={
                        "model": "smollm2-135m-instruct",
                        "messages": [{"role": "user", "content": "Name the capital of France."}],
                        "temperature": 0,
                        "max_tokens": 16,
                    },
                )
            )
            await sync_to_async(wait_for)(
                lambda: len(generations()) == 3, timeout=30, what="the third request"
            )
            assert [g.status for g in await sync_to_async(generations)()] == [
                "running",
                "running",
                "queued",
            ]

            redis_server.stop()
            # During the outage: the open chat socket stays and reads on; requests get 503.
            before_outage = len(streamed)
            while len(streamed) < before_outage + 20:
                assert (await read_socket())["type"] in ("delta", "waiting")
            seen["streamed_during_outage"] = len(streamed) - before_outage
            during = await api.get("/v1/models")
            seen["during"] = (during.status_code, during.headers.get("Retry-After"), during.json())
            ready = await api.get("/readyz")
            seen["ready_during"] = (ready.status_code, ready.json())
            redis_server.start()

            # The same socket sees its answer to the end.
            while (event := await read_socket())["type"] != "done":
                assert event["type"] in ("delta", "waiting")
            seen["chat_done_html"] = event["html"]
            seen["chat_text"] = streamed
            await socket.close()
            seen["sse"] = await asyncio.wait_for(sse, 120)
            answer = await asyncio.wait_for(queued, 120)
            seen["queued"] = (answer.status_code, answer.json())

            # A new chat after the restart works as before.
            async with websockets.connect(
                f"{ws_base}/ws/chat/{later.pk}/", additional_headers=ws_headers
            ) as socket:
                await socket.send(json.dumps({"action": "send", "text": "Hello!"}))
                kinds = []
                while True:
                    event = json.loads(await asyncio.wait_for(socket.recv(), 120))
                    kinds.append(event["type"])
                    if event["type"] == "done":
                        break
                seen["later_events"] = kinds
        return seen

    seen = asyncio.run(scenario())

    assert seen["streamed_during_outage"] >= 20  # type: ignore[operator]
    status, retry_after, body = seen["during"]  # type: ignore[misc]
    assert (status, retry_after) == (503, "5")
    assert body["error"]["code"] == "broker_unavailable"
    ready_status, ready_body = seen["ready_during"]  # type: ignore[misc]
    assert ready_status == 503 and "broker" in ready_body["reason"]

    rows = generations()
    assert len(rows) == 4, [(g.status, g.output[:30]) for g in rows]  # nothing duplicated
    assert [g.status for g in rows] == ["succeeded"] * 4, [g.error_message for g in rows]
    assert all(g.attempts == 1 for g in rows)  # each ran once
    chat_answer = chat.messages.get(role="assistant").generation
    assert seen["chat_text"] == chat_answer.output and len(chat_answer.output) > 100
    assert chat_answer.output.split(",")[0].strip() in seen["chat_done_html"]
    sse_text, sse_tail = seen["sse"]  # type: ignore[misc]
    assert sse_tail[-1] == "[DONE]"
    sse_row = next(g for g in rows if g.api_key_id and g.params["max_tokens"] == 300)
    assert sse_text == sse_row.output and len(sse_text) > 100
    status, body = seen["queued"]  # type: ignore[misc]
    assert status == 200, body
    assert "Paris" in body["choices"][0]["message"]["content"]
    assert "delta" in seen["later_events"] and seen["later_events"][-1] == "done"
