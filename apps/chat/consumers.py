"""The chat WebSocket: one connection per open conversation.

Client → server actions: ``send`` {text, documents?} (the ids of documents attached through
``chat-document-attach``), ``stop``, ``regenerate``, ``rerun`` (the last answer
again with its model version, parameters and seed), ``edit`` {message, text} (a past user message
changed; the turns after it are replaced).
Server → client events: ``message`` {html, replaces?} for a new or replaced turn, ``removed``
{messages} for turns an edit replaced, ``conversation`` {title, html} for its updated sidebar
entry, ``delta`` {generation, offset, text} while an answer streams (the first one of a socket
carries the text so far, at offset 0), ``waiting`` {generation, waiting} when no worker is there
to write it (and when one is again), ``done`` {generation, html} when it ends, ``error``
{message}.

The answers are read through ``apps.inference.streaming.follow``, which reconciles offsets and
reads the database while the channel layer is away: a Redis restart does not close this socket.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.http import Http404
from django.template.loader import render_to_string
from django.utils.translation import gettext as _

from apps.accounts.sockets import ClosedOnDeactivation, InTheirLanguage
from apps.core.errors import ErrorCode, ServiceError
from apps.inference.models import Generation
from apps.inference.selectors import access_generation
from apps.inference.streaming import Delta, Done, Waiting, follow

from . import services
from .models import Conversation, Message
from .selectors import (
    access_conversation,
    conversation_in_flight,
    last_answer,
    message_for_generation,
)

MESSAGE_PARTIAL = "chat/conversation.html#message"
# At most this many frames per connection within the window; more are refused, not queued.
FLOOD_FRAMES = 20
FLOOD_WINDOW_SECONDS = 10.0
ITEM_PARTIAL = "chat/conversation.html#conversation-item"


def _render(message: Message) -> str:
    return render_to_string(MESSAGE_PARTIAL, {"message": message})


class ChatConsumer(InTheirLanguage, ClosedOnDeactivation, AsyncJsonWebsocketConsumer):
    # No channel of its own: each answer is followed by a relay task, the account's deactivation
    # by another, each listening on a channel of its own.
    channel_layer_alias = None  # type: ignore[assignment]
    conversation: Conversation

    async def connect(self) -> None:
        self.relays: dict[str, asyncio.Task[None]] = {}
        self.recent: deque[float] = deque()
        try:
            self.conversation = await database_sync_to_async(access_conversation)(
                self.scope["user"], self.scope["url_route"]["kwargs"]["conversation_id"]
            )
        except Http404:
            await self.close()  # before accept: the handshake is refused
            return
        await self.accept()
        self.watch_deactivation()
        in_flight = await database_sync_to_async(conversation_in_flight)(self.conversation)
        if in_flight is not None:
            self._follow(str(in_flight.pk))
        else:
            # An answer may have finished while this client was reconnecting: settle it.
            last = await database_sync_to_async(last_answer)(self.conversation)
            if last is not None and last.generation_id is not None:
                html = await database_sync_to_async(_render)(last)
                await self.send_json(
                    {"type": "done", "generation": str(last.generation_id), "html": html}
                )

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        """Frames are JSON objects of bounded size, at a bounded rate per connection; anything
        else gets an error event and is dropped (the connection stays open)."""
        now = asyncio.get_running_loop().time()
        recent = self.recent
        while recent and recent[0] < now - FLOOD_WINDOW_SECONDS:
            recent.popleft()
        if len(recent) >= FLOOD_FRAMES:
            await self.send_json(
                {"type": "error", "message": _("Too many messages at once; wait a moment.")}
            )
            return
        recent.append(now)
        if text_data is None:
            await self.send_json({"type": "error", "message": _("Send text frames of JSON.")})
            return
        # A frame holds one action; the longest is a message of CHAT_MAX_MESSAGE_CHARS,
        # each character JSON-escaped to at most six.
        limit = 6 * settings.CHAT_MAX_MESSAGE_CHARS + 1_000
        if len(text_data) > limit:
            await self.send_json(
                {
                    "type": "error",
                    "message": _("The frame has %(count)s characters; the limit is %(limit)s.")
                    % {"count": len(text_data), "limit": limit},
                }
            )
            return
        try:
            content = await self.decode_json(text_data)
        except ValueError:
            await self.send_json(
                {
                    "type": "error",
                    "message": _('Send JSON, such as {"action": "send", "text": "Hi"}.'),
                }
            )
            return
        await self.receive_json(content)

    async def disconnect(self, code: int) -> None:
        self.stop_watching()
        for relay in getattr(self, "relays", {}).values():
            relay.cancel()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        action = content.get("action") if isinstance(content, dict) else None
        try:
            # Settings, title or the conversation itself may have changed since connect (the
            # settings panel, another tab): act on the row as it is now.
            self.conversation = await database_sync_to_async(access_conversation)(
                self.scope["user"], self.conversation.pk
            )
        except Http404:
            await self.send_json({"type": "error", "message": _("This conversation was deleted.")})
            await self.close()
            return
        try:
            if action == "send":
                await self._send_message(content.get("text"), content.get("documents", []))
            elif action == "regenerate":
                await self._regenerate()
            elif action == "rerun":
                await self._regenerate(same_settings=True)
            elif action == "edit":
                await self._edit(content.get("message"), content.get("text"))
            elif action == "stop":
                await database_sync_to_async(services.chat_answer_stop)(
                    conversation=self.conversation
                )
            else:
                await self.send_json(
                    {
                        "type": "error",
                        "message": _("Unknown action; use send, stop, regenerate, rerun or edit."),
                    }
                )
        except ServiceError as exc:
            await self.send_json({"type": "error", "message": exc.message})

    async def _send_message(self, text: Any, documents: Any) -> None:
        if not isinstance(text, str):
            raise ServiceError(ErrorCode.INVALID_PARAMETER, _("Type a message first."))
        if not isinstance(documents, list):
            raise ServiceError(
                ErrorCode.INVALID_PARAMETER,
                _("Send documents as a list of the ids their attaching returned."),
            )

        def send() -> tuple[str, str, str, str]:
            user_message, answer = services.chat_message_send(
                conversation=self.conversation, text=text, documents=documents
            )
            item = render_to_string(
                ITEM_PARTIAL, {"item": self.conversation, "conversation": self.conversation}
            )
            return _render(user_message), _render(answer), str(answer.generation_id), item

        user_html, answer_html, generation_id, item_html = await database_sync_to_async(send)()
        await self.send_json({"type": "message", "html": user_html})
        await self.send_json({"type": "message", "html": answer_html})
        await self.send_json(
            {"type": "conversation", "title": self.conversation.display_title, "html": item_html}
        )
        self._follow(generation_id)

    async def _regenerate(self, *, same_settings: bool = False) -> None:
        def regenerate() -> tuple[int | None, str, str]:
            replaced, answer = services.chat_answer_regenerate(
                conversation=self.conversation, same_settings=same_settings
            )
            return (replaced.pk if replaced else None), _render(answer), str(answer.generation_id)

        replaced_pk, html, generation_id = await database_sync_to_async(regenerate)()
        await self.send_json({"type": "message", "html": html, "replaces": replaced_pk})
        self._follow(generation_id)

    async def _edit(self, message_id: Any, text: Any) -> None:
        if not isinstance(text, str):
            raise ServiceError(ErrorCode.INVALID_PARAMETER, _("Type a message first."))

        def edit() -> tuple[str, int, list[int], str, str]:
            edited, removed, answer = services.chat_message_edit(
                conversation=self.conversation, message_id=message_id, text=text
            )
            return _render(edited), edited.pk, removed, _render(answer), str(answer.generation_id)

        edited_html, edited_pk, removed, answer_html, generation_id = await database_sync_to_async(
            edit
        )()
        await self.send_json({"type": "removed", "messages": removed})
        await self.send_json({"type": "message", "html": edited_html, "replaces": edited_pk})
        await self.send_json({"type": "message", "html": answer_html})
        self._follow(generation_id)

    def _follow(self, generation_id: str) -> None:
        """Relay the answer ``generation_id`` to this socket until it ends."""
        if generation_id not in self.relays:
            self.relays[generation_id] = asyncio.create_task(self._relay(generation_id))

    async def _relay(self, generation_id: str) -> None:
        async for event in follow(Generation, [generation_id]):
            if not isinstance(event, Done):
                await self.send_json(_event_json(event))
                continue
            message = await database_sync_to_async(message_for_generation)(generation_id)
            html = await database_sync_to_async(_render)(message) if message else ""
            await self.send_json({"type": "done", "generation": generation_id, "html": html})
        self.relays.pop(generation_id, None)


def _event_json(event: Delta | Waiting | Done) -> dict[str, Any]:
    """A stream event in the sockets' one shape: ``delta`` {generation, offset, text}, ``waiting``
    {generation, waiting}, and ``done`` with the figures of the finished row."""
    if isinstance(event, Delta):
        return {"type": "delta", "generation": event.id, "offset": event.offset, "text": event.text}
    if isinstance(event, Waiting):
        return {"type": "waiting", "generation": event.id, "waiting": event.waiting}
    row = event.row
    return {
        "type": "done",
        "generation": event.id,
        "status": row.status,
        "error": row.error_message,
        "retryable": row.retryable,
        "completion_tokens": row.completion_tokens,
        "ttft_ms": row.ttft_ms,
        "tokens_per_second": row.tokens_per_second,
    }


class GenerationConsumer(InTheirLanguage, ClosedOnDeactivation, AsyncJsonWebsocketConsumer):
    """Follows one generation the user started: ``ws/generations/<id>/`` (the compare and
    completion panes). Sends ``delta`` {generation, offset, text} as text arrives (the first
    carries all text so far), ``waiting`` {generation, waiting}, then ``done`` {generation,
    status, error, retryable, completion_tokens, ttft_ms, tokens_per_second}."""

    # No channel of its own: ``follow`` listens on one and reads the row when the layer fails,
    # so this socket outlives a Redis restart.
    channel_layer_alias = None  # type: ignore[assignment]
    relay: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        generation_id = self.scope["url_route"]["kwargs"]["generation_id"]
        try:
            generation = await database_sync_to_async(access_generation)(
                self.scope["user"], generation_id
            )
        except Http404:
            await self.close(code=4404)
            return
        await self.accept()
        self.watch_deactivation()
        self.relay = asyncio.create_task(self._relay(str(generation.pk)))

    async def _relay(self, generation_id: str) -> None:
        async for event in follow(Generation, [generation_id]):
            await self.send_json(_event_json(event))

    async def disconnect(self, code: int) -> None:
        self.stop_watching()
        if self.relay is not None:
            self.relay.cancel()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.send_json({"type": "error", "message": _("This socket only sends.")})
