"""A request queue in front of one model, served by one thread; the base of every backend.

Requests are served in arrival order, one at a time. Each request has its own event queue, so the
caller's thread (a Celery task) only waits on its own stream.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator

from apps.core.errors import ErrorCode
from apps.inference.protocol import EngineError, Event, Finished, GenerationRequest, Idle

logger = logging.getLogger(__name__)

Emit = Callable[[Event], None]


class StopRequested(Exception):
    """Raised inside a backend's loop when its request was aborted or ran out of time."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class QueuedEngine:
    """Backends implement ``_load`` (once, on the serving thread) and ``_serve`` (per request)."""

    name = "base"

    def __init__(self) -> None:
        self._pending: queue.Queue[tuple[GenerationRequest, queue.Queue[Event], float]] = (
            queue.Queue()
        )
        self._aborted: set[str] = set()
        self._lock = threading.Lock()
        self._loaded = threading.Event()
        self._load_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"engine-{self.name}", daemon=True)
        self._thread.start()

    # -- interface -------------------------------------------------------------------------
    def generate(self, request: GenerationRequest, *, idle_every: float = 0.2) -> Iterator[Event]:
        events: queue.Queue[Event] = queue.Queue()
        self._pending.put((request, events, time.monotonic()))
        ended = False
        try:
            while True:
                try:
                    event = events.get(timeout=idle_every)
                except queue.Empty:
                    yield Idle()
                    continue
                yield event
                if isinstance(event, Finished | EngineError):
                    ended = True
                    return
        finally:
            # A caller that stops listening early must not leave the model working for nobody.
            if not ended:
                self.abort(request.request_id)

    def abort(self, request_id: str) -> None:
        with self._lock:
            self._aborted.add(request_id)

    def check_health(self) -> None:
        if not self._thread.is_alive():
            raise RuntimeError("the engine's serving thread has stopped")
        if self._load_error is not None:
            raise RuntimeError(f"the model failed to load: {self._load_error}")

    def wait_loaded(self, timeout: float | None = None) -> None:
        """Block until the model is loaded; raise RuntimeError if loading failed."""
        self._loaded.wait(timeout)
        self.check_health()

    # -- backend hooks ---------------------------------------------------------------------
    def _load(self) -> None:
        raise NotImplementedError

    def _serve(self, request: GenerationRequest, emit: Emit, check: Callable[[], None]) -> None:
        """Run ``request`` to its end, emitting TokenDeltas and exactly one Finished or EngineError.

        Call ``check()`` before each step: it raises StopRequested on abort or deadline.
        """
        raise NotImplementedError

    # -- serving thread --------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._load()
        except Exception as exc:  # a model that cannot load must not take the worker down
            logger.exception("engine %s failed to load", self.name)
            self._load_error = exc
        finally:
            self._loaded.set()
        while True:
            request, events, submitted = self._pending.get()
            if self._load_error is not None:
                events.put(
                    EngineError(
                        ErrorCode.MODEL_LOAD_FAILED,
                        f"The model could not be loaded: {self._load_error}",
                        retryable=True,
                    )
                )
                continue
            self._serve_one(request, events.put, submitted)

    def _serve_one(self, request: GenerationRequest, emit: Emit, submitted: float) -> None:
        deadline = submitted + request.deadline_s if request.deadline_s else None

        def check() -> None:
            if request.request_id in self._aborted:
                raise StopRequested("cancelled")
            if deadline is not None and time.monotonic() > deadline:
                raise StopRequested("timeout")

        try:
            self._serve(request, emit, check)
        except Exception:
            logger.exception("engine %s failed on request %s", self.name, request.request_id)
            emit(
                EngineError(
                    ErrorCode.INTERNAL,
                    "The model failed while generating; try again.",
                    retryable=True,
                )
            )
        finally:
            with self._lock:
                self._aborted.discard(request.request_id)
