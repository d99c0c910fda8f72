"""The interfaces the registry and the runner see: every loaded model is a ``ModelServer``; a
generation engine (in the shape of vLLM's EngineClient) and an encoder add their own calls."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

from apps.inference.protocol import EngineError, Event, GenerationRequest

if TYPE_CHECKING:
    from .classifier import Classified
    from .embeddings import Embedded


class ModelServer(Protocol):
    """What the registry keeps per loaded model version."""

    name: str  # the backend, for the worker list: "llamacpp", "transformers", "embeddings", ...
    memory_bytes: int  # what the loaded weights take (0 until known)

    @property
    def loaded(self) -> bool:
        """Whether loading has ended (ready, or failed: ``check_health`` tells)."""
        ...

    def check_health(self) -> None:
        """Raise RuntimeError when the server cannot serve."""
        ...

    def wait_loaded(self, timeout: float | None = None) -> None:
        """Block until loaded; raise RuntimeError if loading failed or is still going after
        ``timeout`` seconds."""
        ...

    def close(self) -> None:
        """Unload. Precondition: nothing is using it (the registry closes only idle servers)."""
        ...


class EngineClient(ModelServer, Protocol):
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


class Embedder(ModelServer, Protocol):
    def embed(self, texts: list[str]) -> Embedded | EngineError:
        """Unit-length vectors for ``texts``; an input over the context is an error."""
        ...


class Classifier(ModelServer, Protocol):
    def classify(self, texts: list[str]) -> Classified | EngineError:
        """Every label's probability for each of ``texts``; an input over the context is an
        error."""
        ...
