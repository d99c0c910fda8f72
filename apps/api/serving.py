"""Serving completions and encoder results in OpenAI's shapes: one JSON answer or a stream of
server-sent events, read through ``apps.inference.streaming`` (the one stream reader)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np
from asgiref.sync import sync_to_async
from django.http import JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase

from apps.core.errors import ErrorCode
from apps.inference.models import EmbeddingBatch, Generation
from apps.inference.streaming import Delta, Done, Event, Waiting, finished, follow
from apps.inference.tools import answer_calls, may_become_call

from .errors import GENERATION_FAILURE_STATUS, ApiError
from .schemas import EmbeddingRequest
from .services import completion_cancel

# An SSE comment (clients skip it) while an answer waits for a worker to take it up again.
WAITING_COMMENT = b": waiting for a worker to continue this answer\n\n"


def failure(row: Generation | EmbeddingBatch, *, param: str = "messages") -> ApiError:
    """A failed record as the API error it answers with: the status by its code, the type by
    whether trying again may help (``server_error``) or the request must change."""
    try:
        code = ErrorCode(row.error_code)
    except ValueError:
        code = ErrorCode.INTERNAL
    return ApiError(
        GENERATION_FAILURE_STATUS[code],
        row.error_message or "The request failed.",
        code=code.value,
        param=param if code == ErrorCode.CONTEXT_LENGTH_EXCEEDED else None,
        error_type="server_error" if row.retryable else "invalid_request_error",
    )


async def encoded(batch: EmbeddingBatch) -> EmbeddingBatch:
    """Wait for a worker to finish ``batch``; its failure as an ApiError."""
    batch = await finished(EmbeddingBatch, batch.pk)
    if batch.status == EmbeddingBatch.Status.FAILED:
        raise failure(batch, param="input")
    return batch


def embeddings_body(batch: EmbeddingBatch, body: EmbeddingRequest) -> dict[str, Any]:
    """A finished embeddings request's answer, in the encoding ``body`` asked for."""
    data = []
    for index, vector in enumerate(batch.vectors or []):
        value: Any = vector
        if body.encoding_format == "float":
            value = np.frombuffer(base64.b64decode(vector), dtype=np.float32).tolist()
        data.append({"object": "embedding", "index": index, "embedding": value})
    return {
        "object": "list",
        "data": data,
        "model": body.model,
        "usage": {"prompt_tokens": batch.prompt_tokens, "total_tokens": batch.prompt_tokens},
    }


def _finish_reason(row: Generation) -> str:
    return "length" if row.finish_reason in ("length", "timeout") else "stop"


def _usage(rows: list[Generation]) -> dict[str, Any]:
    prompt = rows[0].prompt_tokens or 0  # the n choices share one prompt
    completion = sum(r.completion_tokens for r in rows)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": rows[0].cached_tokens},
    }


class Completion:
    """The ids, names and chunk shapes of one API completion with its ``n`` generations.

    Log-probabilities, where the request keeps them, come in the endpoint's own shape: chat's
    ``{"content": [entry, ...]}`` as the worker stores them, or the completions API's parallel
    lists (``tokens``, ``token_logprobs``, ``top_logprobs`` as token-to-logprob maps,
    ``text_offset``: where each token's text starts in the choice's text).

    Where the request offered ``tools`` (their names), an answer that is nothing but calls
    (``apps.inference.tools``) comes as ``message.tool_calls`` with ``finish_reason:
    "tool_calls"``; a stream holds back text while it may still become a call, and sends the
    calls whole when the answer ends (OpenAI's tool-call deltas, each call in one piece)."""

    def __init__(
        self,
        generations: list[Generation],
        model: str,
        *,
        chat: bool,
        echo: str = "",
        tools: set[str] | None = None,
    ) -> None:
        self.ids = [str(g.pk) for g in generations]
        self.index = {gid: i for i, gid in enumerate(self.ids)}
        self.chat = chat
        self.model = model
        self.echo = echo  # completions: the prompt, put before each choice's text
        self.tools = tools or set()
        # Streams: per choice, the text and entries held back while they may become a call.
        self.held: dict[str, tuple[str, list[dict[str, Any]]]] = {}
        self.decided: set[str] = set()  # choices known to be text
        self.keeps_logprobs = generations[0].params.get("logprobs") is not None
        self.text_offset = dict.fromkeys(self.ids, len(echo))  # completions: the next token's
        self.id = ("chatcmpl-" if chat else "cmpl-") + generations[0].pk.hex
        self.created = int(generations[0].created_at.timestamp())
        self.object = "chat.completion" if chat else "text_completion"

    def chunk(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        body = {
            "id": self.id,
            "object": self.object + (".chunk" if self.chat else ""),
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **extra,
        }
        return f"data: {json.dumps(body)}\n\n".encode()

    def first_chunk(self) -> bytes:
        """A chat stream opens with the assistant's role for every choice."""
        return self.chunk(
            [
                {
                    "index": i,
                    "delta": {"role": "assistant", "content": ""},
                    "finish_reason": None,
                    "logprobs": None,
                }
                for i in range(len(self.ids))
            ]
        )

    def logprobs(
        self, generation_id: str, entries: Sequence[dict[str, Any]], *, prompt: bool = False
    ) -> Any:
        """``entries`` (the next of the generation's stored ones, or with ``prompt`` its
        prompt's) in the endpoint's shape."""
        if not self.keeps_logprobs:
            return None
        if prompt:
            self.text_offset[generation_id] = 0
        if self.chat:
            return {"content": list(entries), "refusal": None}
        offsets = []
        for entry in entries:
            offsets.append(self.text_offset[generation_id])
            self.text_offset[generation_id] += len(entry["token"])
        if prompt:  # the answer's own tokens start after the prompt's text
            self.text_offset[generation_id] = len(self.echo)
        return {
            "tokens": [entry["token"] for entry in entries],
            "token_logprobs": [entry["logprob"] for entry in entries],
            "top_logprobs": [
                None  # the prompt's first token, which nothing before it predicts
                if entry["top_logprobs"] is None
                else {top["token"]: top["logprob"] for top in entry["top_logprobs"]}
                for entry in entries
            ],
            "text_offset": offsets,
        }

    def text_choice(
        self,
        generation_id: str,
        text: str,
        finish: str | None = None,
        entries: Sequence[dict[str, Any]] = (),
        *,
        prompt: bool = False,
    ) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": self.index[generation_id], "finish_reason": finish}
        if self.chat:
            choice["delta"] = {"content": text} if text else {}
        else:
            choice["text"] = text
        logprobs = self.logprobs(generation_id, entries, prompt=prompt) if entries else None
        choice["logprobs"] = logprobs
        return choice

    def calls(self, generation_id: str, text: str) -> list[dict[str, Any]] | None:
        """The tool calls ``text`` makes, in OpenAI's shape, or None when it is text or the
        request offered no tools."""
        return answer_calls(generation_id, text, self.tools)

    def delta_choices(self, event: Delta) -> list[dict[str, Any]]:
        """A stream's choices for one delta: none while its text may still become a call."""
        if not self.tools or event.id in self.decided:
            return [self.text_choice(event.id, event.text, entries=event.logprobs)]
        text, entries = self.held.get(event.id, ("", []))
        text, entries = text + event.text, [*entries, *event.logprobs]
        if may_become_call(text):
            self.held[event.id] = (text, entries)
            return []
        self.held.pop(event.id, None)
        self.decided.add(event.id)
        return [self.text_choice(event.id, text, entries=entries)]

    def final_choices(self, generation_id: str, reason: str) -> list[dict[str, Any]]:
        """A stream's last choices for a generation: what was held back (as calls, when it is
        one), then the finish reason."""
        text, entries = self.held.pop(generation_id, ("", []))
        if not text:
            return [self.text_choice(generation_id, "", reason)]
        calls = self.calls(generation_id, text) if reason == "stop" else None
        if calls is None:
            return [
                self.text_choice(generation_id, text, entries=entries),
                self.text_choice(generation_id, "", reason),
            ]
        index = self.index[generation_id]
        delta = {"tool_calls": [{"index": i, **call} for i, call in enumerate(calls)]}
        logprobs = self.logprobs(generation_id, entries) if entries else None
        return [
            {"index": index, "delta": delta, "finish_reason": None, "logprobs": logprobs},
            {"index": index, "delta": {}, "finish_reason": "tool_calls", "logprobs": None},
        ]

    def echo_choices(self, rows: dict[str, Generation]) -> list[dict[str, Any]]:
        """The stream's first choices when the prompt is echoed: its text (and log-probabilities,
        where kept, from whichever of ``rows`` has them: every choice shares the prompt)."""
        entries = next((r.prompt_logprobs for r in rows.values() if r.prompt_logprobs), None)
        return [
            self.text_choice(gid, self.echo, entries=entries or (), prompt=True) for gid in self.ids
        ]

    def full(self, texts: dict[str, str], rows: dict[str, Generation]) -> dict[str, Any]:
        choices = []
        for gid in self.ids:
            choice: dict[str, Any] = {
                "index": self.index[gid],
                "finish_reason": _finish_reason(rows[gid]),
                "logprobs": self.logprobs(gid, rows[gid].logprobs or ()),
            }
            if self.chat:
                choice["message"] = {"role": "assistant", "content": texts[gid]}
                calls = self.calls(gid, texts[gid]) if choice["finish_reason"] == "stop" else None
                if calls is not None:
                    choice["message"] = {"role": "assistant", "content": None, "tool_calls": calls}
                    choice["finish_reason"] = "tool_calls"
            else:
                choice["text"] = self.echo + texts[gid]
                if self.echo and self.keeps_logprobs:
                    prompt = self.logprobs(gid, rows[gid].prompt_logprobs or (), prompt=True)
                    for key, values in prompt.items():
                        values.extend(choice["logprobs"][key])
                    choice["logprobs"] = prompt
            choices.append(choice)
        return {
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": _usage([rows[gid] for gid in self.ids]),
        }


def _rows(ids: list[str]) -> dict[str, Generation]:
    return {str(row.pk): row for row in Generation.objects.filter(pk__in=ids)}


async def opening(events: AsyncIterator[Event]) -> Delta | Done:
    """The first text or end of a stream. An answer waits for it before it starts, so that a
    request the worker rejects (a prompt over the context, say) gets its error status even when
    it asked for a stream."""
    first = await anext(events)
    while isinstance(first, Waiting):
        first = await anext(events)
    return first


async def serve_completion(
    generations: list[Generation],
    *,
    model: str,
    chat: bool,
    stream: bool,
    include_usage: bool,
    echo: str = "",
    tools: set[str] | None = None,
) -> HttpResponseBase:
    """Answer with ``generations`` (the ``n`` choices of one request) once they finish, or as
    they stream (``echo``: the completion prompt, sent before each choice's text). Whatever is
    unfinished when the client goes away is cancelled; ``tools``: the names of the functions the
    answer may call."""
    completion = Completion(generations, model, chat=chat, echo=echo, tools=tools)
    events = follow(Generation, completion.ids)
    finished_rows: dict[str, Generation] = {}

    async def cancel_unfinished() -> None:
        await events.aclose()
        if len(finished_rows) < len(generations):
            await sync_to_async(completion_cancel)(generations=generations)

    try:
        first = await opening(events)
        if isinstance(first, Done) and first.row.status == Generation.Status.FAILED:
            await cancel_unfinished()
            raise failure(first.row)
        if not stream:
            texts = dict.fromkeys(completion.ids, "")
            event: Event | None = first
            while event is not None:
                if isinstance(event, Delta):
                    texts[event.id] += event.text
                elif isinstance(event, Done):
                    if event.row.status == Generation.Status.FAILED:
                        await cancel_unfinished()
                        raise failure(event.row)
                    finished_rows[event.id] = event.row
                event = await anext(events, None)
            return JsonResponse(completion.full(texts, finished_rows))
    except asyncio.CancelledError:  # the client disconnected while waiting
        await cancel_unfinished()
        raise

    async def chunks() -> AsyncIterator[bytes]:
        try:
            if chat:
                yield completion.first_chunk()
            elif echo:
                rows = await sync_to_async(_rows)(completion.ids)
                yield completion.chunk(completion.echo_choices(rows))
            event: Event | None = first
            said_waiting = False
            while event is not None:
                if isinstance(event, Delta):
                    choices = completion.delta_choices(event)
                    if choices:
                        yield completion.chunk(choices)
                elif isinstance(event, Waiting):
                    if event.waiting and not said_waiting:
                        yield WAITING_COMMENT
                    said_waiting = event.waiting
                elif event.row.status == Generation.Status.FAILED:
                    yield f"data: {json.dumps(failure(event.row).body())}\n\n".encode()
                    return
                else:
                    finished_rows[event.id] = event.row
                    reason = _finish_reason(event.row)
                    for choice in completion.final_choices(event.id, reason):
                        yield completion.chunk([choice])
                event = await anext(events, None)
            if include_usage:
                yield completion.chunk([], usage=_usage([finished_rows[g] for g in completion.ids]))
            yield b"data: [DONE]\n\n"
        finally:
            await cancel_unfinished()

    response = StreamingHttpResponse(chunks(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response
