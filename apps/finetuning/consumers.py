"""Live progress of one fine-tuning job: ``ws/finetuning/jobs/<id>/?after=<last event id>``.

On connect the consumer sends the events after ``after`` (what the page has not drawn yet), then
each new one as ``{"type": "job.event", "job": <state>, "event": <event>}`` (``job.state`` alone
when there is no event to send). Server to client only; the page drops events whose id it has
already drawn. Every event is a row before it is published, so the relay reads the rows on a
quiet spell and while the channel layer is away: a Redis restart does not close this socket.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.http import Http404
from django.utils.translation import gettext

from apps.accounts.sockets import ClosedOnDeactivation, InTheirLanguage
from apps.core.channel_layers import Listener

from .selectors import access_job, job_events
from .streaming import job_group, job_state

RECHECK_SECONDS = 5.0


class JobConsumer(InTheirLanguage, ClosedOnDeactivation, AsyncJsonWebsocketConsumer):
    # No channel of its own: the relay listens on one, and reads the rows while the layer is away.
    channel_layer_alias = None  # type: ignore[assignment]
    relay: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        user = self.scope["user"]
        job_id = self.scope["url_route"]["kwargs"]["job_id"]
        try:
            job = await database_sync_to_async(access_job)(user, job_id)
        except Http404:
            await self.close(code=4404)
            return
        await self.accept()
        self.watch_deactivation()
        query = parse_qs(self.scope.get("query_string", b"").decode())
        try:
            after = int(query.get("after", ["0"])[0])
        except ValueError:
            after = 0
        self.relay = asyncio.create_task(self._relay(job.pk, after))

    async def _relay(self, job_id: Any, after: int) -> None:
        user = self.scope["user"]

        def backlog(after: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
            fresh = access_job(user, job_id)
            return job_state(fresh), [e.as_json() for e in job_events(fresh, after=after)]

        async with Listener([job_group(job_id)]) as listener:
            state, events = await database_sync_to_async(backlog)(after)
            if not events:
                await self.send_json({"type": "job.state", "job": state})
            while True:
                for event in events:
                    if event["id"] > after:
                        await self.send_json({"type": "job.event", "job": state, "event": event})
                        after = event["id"]
                message = await listener.next(RECHECK_SECONDS)
                if message is None:  # a quiet spell, or the layer is away: read the rows
                    state, events = await database_sync_to_async(backlog)(after)
                else:
                    state, events = message["job"], [message["event"]]

    async def disconnect(self, code: int) -> None:
        self.stop_watching()
        if self.relay is not None:
            self.relay.cancel()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.send_json({"type": "error", "message": gettext("This socket only sends.")})
