"""The load client: concurrent streams over the OpenAI-style API (SSE) or the chat WebSocket."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

import httpx
import websockets
from common import (
    NEW_TOKENS,
    QUESTIONS,
    SHORT_PROMPT,
    TURN_TOKENS,
    Sample,
    document,
    messages,
)


async def sse_stream(
    client: httpx.AsyncClient,
    url: str,
    index: int,
    *,
    headers: dict[str, str],
    model: str,
    chat: list[dict[str, str]] | None = None,
    max_tokens: int = NEW_TOKENS,
    answer: list[str] | None = None,
    extra: dict[str, object] | None = None,
) -> Sample:
    """One greedy streamed answer to ``chat`` (else the bench prompt ``index``); its text is
    appended to ``answer`` when given; ``extra``: more of the request's body."""
    body = {
        "model": model,
        "messages": chat or messages(index),
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        **(extra or {}),
    }
    start = time.monotonic()
    first = last = None
    tokens = prompt_tokens = 0
    text = []
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
                    prompt_tokens = chunk["usage"].get("prompt_tokens", 0)
                for choice in chunk.get("choices", []):
                    if content := choice.get("delta", {}).get("content"):
                        first = first or time.monotonic()
                        last = time.monotonic()
                        text.append(content)
    except httpx.HTTPError as exc:
        return Sample(start, first, last, time.monotonic(), tokens, repr(exc))
    if answer is not None:
        answer.append("".join(text))
    return Sample(start, first, last, time.monotonic(), tokens, prompt_tokens=prompt_tokens)


async def conversation(
    client: httpx.AsyncClient, url: str, *, headers: dict[str, str], model: str, tag: str
) -> list[Sample]:
    """The multi-turn run: a short fresh prompt first (the yardstick), then the six questions
    over the document, each turn sending the history so far, as a chat client does."""
    samples = [
        await sse_stream(
            client,
            url,
            0,
            headers=headers,
            model=model,
            chat=[{"role": "user", "content": f"{SHORT_PROMPT} ({tag})"}],
            max_tokens=TURN_TOKENS,
        )
    ]
    history: list[dict[str, str]] = []
    for turn, question in enumerate(QUESTIONS):
        content = f"{document(tag)}\n\n{question}" if turn == 0 else question
        history.append({"role": "user", "content": content})
        answer: list[str] = []
        samples.append(
            await sse_stream(
                client,
                url,
                0,
                headers=headers,
                model=model,
                chat=list(history),
                max_tokens=TURN_TOKENS,
                answer=answer,
            )
        )
        history.append({"role": "assistant", "content": answer[0] if answer else ""})
    return samples


async def cold_prompt(
    client: httpx.AsyncClient, url: str, *, headers: dict[str, str], model: str, tag: str
) -> Sample:
    """The document no cache holds (``tag`` is new), one token out: how fast a prompt is read."""
    chat = [{"role": "user", "content": f"{document(tag)}\n\nSummarise it."}]
    return await sse_stream(client, url, 0, headers=headers, model=model, chat=chat, max_tokens=1)


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
