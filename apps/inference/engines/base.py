"""The engine interface, in the shape of vLLM's EngineClient."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from apps.inference.protocol import Event, GenerationRequest


class EngineClient(Protocol):
    def generate(self, request: GenerationRequest, *, idle_every: float = 0.2) -> Iterator[Event]:
        """Stream the events of one request, ending with exactly one Finished or EngineError.

        Yields Idle at least every ``idle_every`` seconds while nothing else happens. Never raises
        for a bad request: errors arrive as EngineError events.
        """
        ...

    def abort(self, request_id: str) -> None:
        """Ask the engine to drop ``request_id`` at its next step; its stream then finishes
        with ``finish_reason="cancelled"``. Unknown ids are ignored."""
        ...

    def check_health(self) -> None:
        """Raise RuntimeError when the engine cannot serve."""
        ...
