"""Live progress of one fine-tuning job: ``ws/finetuning/jobs/<id>/?after=<last event id>``.

On connect the consumer sends the events after ``after`` (what the page has not drawn yet), then
relays each new ``job.event`` as ``{"type": "job.event", "job": <state>, "event": <event>}``.
Server to client only; the page drops events whose id it has already drawn.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.http import Http404

from apps.accounts.sockets import ClosedOnDeactivation
from apps.core.consumers import LayerLossCloses

from .selectors import access_job, job_events
from .streaming import job_group, job_state


class JobConsumer(LayerLossCloses, ClosedOnDeactivation, AsyncJsonWebsocketConsumer):
    group: str | None = None

    async def connect(self) -> None:
        user = self.scope["user"]
        job_id = self.scope["url_route"]["kwargs"]["job_id"]
        try:
            job = await database_sync_to_async(access_job)(user, job_id)
        except Http404:
            await self.close(code=4404)
            return
        self.group = job_group(job.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.join_user_group()
        query = parse_qs(self.scope.get("query_string", b"").decode())
        try:
            after = int(query.get("after", ["0"])[0])
        except ValueError:
            after = 0

        def backlog() -> tuple[dict[str, Any], list[dict[str, Any]]]:
            fresh = access_job(user, job_id)
            return job_state(fresh), [e.as_json() for e in job_events(fresh, after=after)]

        state, events = await database_sync_to_async(backlog)()
        for event in events:
            await self.send_json({"type": "job.event", "job": state, "event": event})
        if not events:
            await self.send_json({"type": "job.state", "job": state})

    async def disconnect(self, code: int) -> None:
        await self.leave_user_group()
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.send_json({"type": "error", "message": "This socket only sends."})

    async def job_event(self, message: dict[str, Any]) -> None:
        await self.send_json(
            {"type": "job.event", "job": message["job"], "event": message["event"]}
        )
