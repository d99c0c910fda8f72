"""Serving the Responses API: the response object, and its stream of typed events, over the chat
generation that answers a response (read through ``apps.inference.streaming``, the one stream
reader, as chat completions are)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from django.http import JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase

from apps.inference.models import Generation
from apps.inference.streaming import Delta, Done, Event, Waiting, follow
from apps.inference.tools import answer_calls, may_become_call

from .decorators import list_page
from .models import StoredResponse
from .selectors import response_id
from .services import completion_cancel, response_tool_names
from .serving import WAITING_COMMENT, failure, opening

_STATUS = {
    Generation.Status.QUEUED: "queued",
    Generation.Status.RUNNING: "in_progress",
    Generation.Status.SUCCEEDED: "completed",
    Generation.Status.FAILED: "failed",
    Generation.Status.CANCELLED: "cancelled",
}
# The stream's last event for each final status.
_LAST_EVENT = {
    "completed": "response.completed",
    "incomplete": "response.incomplete",
    "failed": "response.failed",
    "cancelled": "response.incomplete",
}


def _status(generation: Generation) -> str:
    status = _STATUS[Generation.Status(generation.status)]
    if status == "completed" and generation.finish_reason in ("length", "timeout"):
        return "incomplete"
    return status


def _message_id(stored: StoredResponse) -> str:
    return "msg_" + stored.pk.hex


def _message(stored: StoredResponse, text: str, status: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": _message_id(stored),
        "status": status,
        "role": "assistant",
        "content": [_text_part(text)] if status != "in_progress" or text else [],
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _function_calls(stored: StoredResponse, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function_call",
            "id": f"fc_{stored.pk.hex[:16]}{i}",
            "call_id": call["id"],
            "name": call["function"]["name"],
            "arguments": call["function"]["arguments"],
            "status": "completed",
        }
        for i, call in enumerate(calls)
    ]


def response_object(stored: StoredResponse, generation: Generation) -> dict[str, Any]:
    """The response as ``GET /v1/responses/{id}`` shows it, from its generation as it stands."""
    status = _status(generation)
    finished = generation.is_finished
    output: list[dict[str, Any]] = []
    calls = (
        answer_calls(generation.pk, generation.output, response_tool_names(stored))
        if status == "completed"
        else None
    )
    if calls is not None:
        output = _function_calls(stored, calls)
    elif generation.output or finished:
        output = [_message(stored, generation.output, "completed" if finished else "in_progress")]
        if status in ("incomplete", "cancelled"):
            output[0]["status"] = "incomplete"
    request = stored.request
    prompt = generation.prompt_tokens or 0
    body: dict[str, Any] = {
        "id": response_id(stored),
        "object": "response",
        "created_at": int(generation.created_at.timestamp()),
        "status": status,
        "background": request.get("background", False),
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "metadata": request.get("metadata") or {},
        "model": stored.model,
        "output": output,
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": request.get("previous_response_id"),
        "store": request.get("store", True),
        "temperature": generation.params.get("temperature"),
        "text": request.get("text") or {"format": {"type": "text"}},
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": [{"type": "function", **tool} for tool in request.get("tools") or ()],
        "top_p": generation.params.get("top_p"),
        "truncation": "disabled",
        "user": request.get("user"),
        "usage": {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": generation.cached_tokens},
            "output_tokens": generation.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + generation.completion_tokens,
        }
        if finished
        else None,
    }
    if status == "failed":
        error = failure(generation, param="input")
        body["error"] = {"code": error.code, "message": error.message}
    elif status == "incomplete":
        reason = "max_output_tokens" if generation.finish_reason == "length" else "timeout"
        body["incomplete_details"] = {"reason": reason}
    elif status == "cancelled":
        body["incomplete_details"] = {"reason": "cancelled"}
    return body


def _row(pk: Any) -> Generation:
    return Generation.objects.get(pk=pk)


class ResponseEvents:
    """The Responses API's stream for one response: ``response.created``, then the output items
    as the text comes (``response.output_text.delta``; a call, where the request offered tools,
    as a ``function_call`` item once the answer ends), then ``response.completed`` (or
    ``incomplete``, ``failed``), each event numbered."""

    def __init__(self, stored: StoredResponse) -> None:
        self.stored = stored
        self.tools = response_tool_names(stored)
        self.sequence = 0
        self.held = ""  # text that may still become a call
        self.text = ""  # the message's text sent so far
        self.opened = False  # the message item has been announced

    def event(self, kind: str, **fields: Any) -> bytes:
        body = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return f"event: {kind}\ndata: {json.dumps(body)}\n\n".encode()

    def opening(self, generation: Generation) -> list[bytes]:
        snapshot = response_object(self.stored, generation)
        snapshot.update(status="in_progress", output=[], usage=None)
        return [
            self.event("response.created", response=snapshot),
            self.event("response.in_progress", response=snapshot),
        ]

    def _where(self) -> dict[str, Any]:
        return {"item_id": _message_id(self.stored), "output_index": 0}

    def _text(self, text: str) -> list[bytes]:
        events = []
        if not self.opened:
            self.opened = True
            item = _message(self.stored, "", "in_progress")
            events.append(self.event("response.output_item.added", output_index=0, item=item))
            events.append(
                self.event(
                    "response.content_part.added",
                    **self._where(),
                    content_index=0,
                    part=_text_part(""),
                )
            )
        if text:
            self.text += text
            events.append(
                self.event(
                    "response.output_text.delta",
                    **self._where(),
                    content_index=0,
                    delta=text,
                    logprobs=[],
                )
            )
        return events

    def delta(self, text: str) -> list[bytes]:
        if self.tools and not self.opened:
            self.held += text
            if may_become_call(self.held):
                return []
            text, self.held = self.held, ""
        return self._text(text)

    def closing(self, generation: Generation) -> list[bytes]:
        final = response_object(self.stored, generation)
        status = final["status"]
        events: list[bytes] = []
        calls = [item for item in final["output"] if item["type"] == "function_call"]
        for index, item in enumerate(calls):
            events.append(
                self.event(
                    "response.output_item.added",
                    output_index=index,
                    item={**item, "arguments": "", "status": "in_progress"},
                )
            )
            where = {"item_id": item["id"], "output_index": index}
            events.append(
                self.event(
                    "response.function_call_arguments.delta", **where, delta=item["arguments"]
                )
            )
            events.append(
                self.event(
                    "response.function_call_arguments.done", **where, arguments=item["arguments"]
                )
            )
            events.append(self.event("response.output_item.done", output_index=index, item=item))
        if not calls and (self.held or self.opened or status == "completed"):
            events.extend(self._text(self.held))
            self.held = ""
            events.append(
                self.event(
                    "response.output_text.done",
                    **self._where(),
                    content_index=0,
                    text=self.text,
                    logprobs=[],
                )
            )
            events.append(
                self.event(
                    "response.content_part.done",
                    **self._where(),
                    content_index=0,
                    part=_text_part(self.text),
                )
            )
            item = final["output"][0] if final["output"] else _message(self.stored, "", status)
            events.append(self.event("response.output_item.done", output_index=0, item=item))
        if status == "failed":
            error = final["error"]
            events.append(self.event("error", code=error["code"], message=error["message"]))
        events.append(self.event(_LAST_EVENT[status], response=final))
        return events


async def serve_response(stored: StoredResponse, *, stream: bool) -> HttpResponseBase:
    """Answer ``stored``: at once when it runs in the background (the client fetches it later),
    else once its generation finishes, or as it streams. A client that goes away stops a
    response that is not in the background."""
    generation = stored.generation
    background = bool(stored.request.get("background"))
    if background and not stream:
        return JsonResponse(response_object(stored, await sync_to_async(_row)(generation.pk)))
    events = follow(Generation, [str(generation.pk)])
    done = False

    async def stop() -> None:
        await events.aclose()
        if not done and not background:
            await sync_to_async(completion_cancel)(generations=[generation])

    try:
        first = await opening(events)
        if isinstance(first, Done) and first.row.status == Generation.Status.FAILED:
            done = True
            await stop()
            raise failure(first.row, param="input")
        if not stream:
            event: Event | None = first
            while event is not None and not isinstance(event, Done):
                event = await anext(events, None)
            done = True
            row = await sync_to_async(_row)(generation.pk)
            return JsonResponse(response_object(stored, row))
    except asyncio.CancelledError:  # the client went away while waiting
        await stop()
        raise

    shapes = ResponseEvents(stored)

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal done
        try:
            for chunk in shapes.opening(generation):
                yield chunk
            event: Event | None = first
            said_waiting = False
            while event is not None:
                if isinstance(event, Delta):
                    for chunk in shapes.delta(event.text):
                        yield chunk
                elif isinstance(event, Waiting):
                    if event.waiting and not said_waiting:
                        yield WAITING_COMMENT
                    said_waiting = event.waiting
                else:
                    done = True
                    for chunk in shapes.closing(event.row):
                        yield chunk
                event = await anext(events, None)
        finally:
            await stop()

    response = StreamingHttpResponse(chunks(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


def _input_item(stored: StoredResponse, index: int, item: dict[str, Any]) -> dict[str, Any]:
    """One input item as ``GET .../input_items`` lists it: with an id, and text as parts."""
    kind = item.get("type", "message")
    prefix = {"message": "msg_", "function_call": "fc_", "function_call_output": "fco_"}[kind]
    shaped = {**item, "type": kind, "id": f"{prefix}{stored.pk.hex[:20]}{index:04d}"}
    shaped["status"] = "completed"
    if kind == "message" and isinstance(item["content"], str):
        part = "output_text" if item["role"] == "assistant" else "input_text"
        shaped["content"] = [{"type": part, "text": item["content"]}]
    return shaped


def input_items_page(
    stored: StoredResponse, *, order: str, limit: int, after: str | None
) -> dict[str, Any]:
    """``GET /v1/responses/{id}/input_items``: the request's input items, newest first unless
    ``order`` is ``asc``, ``limit`` of them after the item ``after``."""
    items = [_input_item(stored, i, item) for i, item in enumerate(stored.input_items)]
    if order == "desc":
        items.reverse()
    return list_page(
        items,
        id_of=lambda item: item["id"],
        shape=lambda item: item,
        after=after,
        limit=limit,
        what="input item",
    )
