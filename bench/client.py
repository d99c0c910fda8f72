"""The load client: concurrent streams over the OpenAI-style API (SSE) or the chat WebSocket."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

import httpx
import websockets
from common import NEW_TOKENS, Sample, messages


async def sse_stream(
    client: httpx.AsyncClient, url: str, index: int, *, headers: dict[str, str], model: str
) -> Sample:
    body = {
        "model": model,
        "messages": messages(index),
        "max_tokens": NEW_TOKENS,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.monotonic()
    first = last = None
    tokens = 0
    try:
        async with client.stream("POST", url, json=body, headers=headers) as response:
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")
                return Sample(
                    start, None, None, time.monotonic(), 0, f"{response.status_code} {text}"
                )
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line.removeprefix("data: ")
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
                for choice in chunk.get("choices", []):
                    if choice.get("delta", {}).get("content"):
                        first = first or time.monotonic()
                        last = time.monotonic()
    except httpx.HTTPError as exc:
        return Sample(start, first, last, time.monotonic(), tokens, repr(exc))
    return Sample(start, first, last, time.monotonic(), tokens)


async def ws_stream(url: str, index: int, *, cookie: str, origin: str) -> tuple[Sample, str]:
    """Send one message on a conversation's socket; the generation id comes back for the tokens."""
    from common import PROMPTS

    start = time.monotonic()
    first = last = None
    generation = ""
    try:
        async with websockets.connect(
            url, additional_headers={"Cookie": cookie, "Origin": origin}, max_size=2**22
        ) as socket:
            start = time.monotonic()
            await socket.send(json.dumps({"action": "send", "text": PROMPTS[index % len(PROMPTS)]}))
            async for raw in socket:
                event = json.loads(raw)
                kind = event.get("type")
                if kind == "delta" and event.get("text"):
                    first = first or time.monotonic()
                    last = time.monotonic()
                elif kind == "done":
                    generation = event["generation"]
                    break
                elif kind == "error":
                    return Sample(start, first, last, time.monotonic(), 0, event["message"]), ""
    except (OSError, websockets.WebSocketException) as exc:
        return Sample(start, first, last, time.monotonic(), 0, repr(exc)), ""
    return Sample(start, first, last, time.monotonic(), 0), generation


async def concurrently(streams: int, one: Callable[[int], Awaitable[object]]) -> list[object]:
    return list(await asyncio.gather(*(one(i) for i in range(streams))))
