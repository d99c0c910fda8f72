"""The serving thread in front of one model: requests in, a stream of events out per request.

``EngineThread`` owns the parts every backend shares (it implements ``base.EngineClient``): a
submission queue, one event queue per request (a Celery task's thread waits only on its own
stream), aborts, and loading on the serving thread. ``QueuedEngine`` serves requests one at a
time (the fake engine); the transformers backend batches them (``batching.BatchingEngine``), the
llama.cpp one too (``llamacpp.LlamaCppEngine``).

Streams are paced (``Pacing``): a request's first text goes out at once, later text at most once
per flush interval, which grows with the number of running streams, so a task thread wakes, writes
its row and publishes once per interval rather than once per token, and 32 streams do not mean 32
wake-ups per step.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from apps.core.errors import ErrorCode
from apps.inference.protocol import (
    EngineError,
    Event,
    Finished,
    GenerationRequest,
    Idle,
    TokenDelta,
)

logger = logging.getLogger(__name__)

Emit = Callable[[Event], None]


class StopRequested(Exception):
    """Raised inside a backend's loop when its request was aborted or ran out of time."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Submission:
    request: GenerationRequest
    emit: Emit
    submitted: float  # time.monotonic()
    pending_text: str = ""
    pending_ids: list[int] = field(default_factory=list)
    pending_logprobs: list[dict[str, Any]] = field(default_factory=list)
    prompt_logprobs: tuple[dict[str, Any], ...] | None = None  # sent with the first delta
    last_sent: float | None = None  # when its last TokenDelta went out (None: none yet)

    @property
    def deadline(self) -> float | None:
        deadline_s = self.request.deadline_s
        return self.submitted + deadline_s if deadline_s else None

    def add(
        self,
        text: str,
        token_ids: Sequence[int],
        *,
        interval: float,
        logprobs: Sequence[dict[str, Any]] = (),
    ) -> None:
        """Queue ``text`` (what the stop tracker released; may be empty) and the tokens it came
        from (with their log-probability entries, when the request keeps them): sent at once
        when it is the first text, else once ``interval`` has passed."""
        self.pending_text += text
        self.pending_ids.extend(token_ids)
        self.pending_logprobs.extend(logprobs)
        if not self.pending_text:
            return
        now = time.monotonic()
        if self.last_sent is None or now - self.last_sent >= interval:
            self.send()

    def send(self) -> None:
        """Send what is queued now."""
        if self.pending_text or self.pending_ids or self.prompt_logprobs:
            self.emit(
                TokenDelta(
                    self.pending_text,
                    tuple(self.pending_ids),
                    tuple(self.pending_logprobs),
                    self.prompt_logprobs,
                )
            )
            self.pending_text, self.pending_ids, self.pending_logprobs = "", [], []
            self.prompt_logprobs = None
            self.last_sent = time.monotonic()

    def end(self, event: Finished | EngineError) -> None:
        """Send what is queued, then the stream's last event."""
        self.send()
        self.emit(event)


@dataclass(frozen=True)
class Pacing:
    """How often a stream's text goes out: at most every ``seconds``, and no more than
    ``per_second`` deltas a second across all the engine's streams; a Batch API request's, which
    nobody watches, every ``batch_seconds`` (each delta is a database write and a publish that
    would take CPU from the interactive requests)."""

    seconds: float = 0.1
    per_second: float = 100.0
    batch_seconds: float = 1.0

    def interval(self, streams: int) -> float:
        """How long a stream's text waits at most, with ``streams`` running."""
        return max(self.seconds, streams / self.per_second)

    def of(self, request: GenerationRequest, interval: float) -> float:
        """``interval`` (the engine's now), or a batch request's longer one."""
        return max(interval, self.batch_seconds) if request.batch else interval


class EngineThread:
    """Backends implement ``_load`` (once, on the serving thread) and ``_loop`` (forever)."""

    name = "base"

    def __init__(self, *, pacing: Pacing | None = None) -> None:
        self.pacing = pacing or Pacing()
        # A stream's flush interval, set by the backend from how many streams run.
        self._interval = self.pacing.seconds
        # None is the wake-up that ``close`` sends.
        self._pending: queue.Queue[Submission | None] = queue.Queue()
        self._aborted: set[str] = set()
        self._lock = threading.Lock()
        self._loaded = threading.Event()
        self._load_error: BaseException | None = None
        self._closing = threading.Event()
        self.memory_bytes = 0  # what the loaded weights take, set by ``_load``
        self._thread = threading.Thread(target=self._run, name=f"engine-{self.name}", daemon=True)
        self._thread.start()

    # -- interface -------------------------------------------------------------------------
    def generate(self, request: GenerationRequest, *, idle_every: float = 0.2) -> Iterator[Event]:
        if self._closing.is_set():
            yield EngineError(
                ErrorCode.MODEL_UNLOADED, "The model was unloaded from this worker; try again."
            )
            return
        events: queue.Queue[Event] = queue.Queue()
        self._pending.put(Submission(request, events.put, time.monotonic()))
        ended = False
        try:
            while True:
                try:
                    event = events.get(timeout=idle_every)
                except queue.Empty:
                    yield Idle()
                    continue
                if isinstance(event, Finished | EngineError):
                    ended = True  # before the yield: a caller may stop listening right after it
                    yield event
                    return
                yield event
        finally:
            # A caller that stops listening early must not leave the model working for nobody.
            if not ended:
                self.abort(request.request_id)

    def abort(self, request_id: str) -> None:
        with self._lock:
            self._aborted.add(request_id)

    def close(self) -> None:
        """Unload: the serving thread ends and drops the model. Precondition: nothing is
        streaming (the registry closes only engines no task holds); a request submitted anyway
        gets a retryable error."""
        self._closing.set()
        self._pending.put(None)

    def check_health(self) -> None:
        if self._closing.is_set():
            raise RuntimeError("the model was unloaded")
        if not self._thread.is_alive():
            raise RuntimeError("the engine's serving thread has stopped")
        if self._load_error is not None:
            raise RuntimeError(f"the model failed to load: {self._load_error}")

    @property
    def loaded(self) -> bool:
        return self._loaded.is_set()

    def wait_loaded(self, timeout: float | None = None) -> None:
        """Block until the model is loaded; raise RuntimeError if loading failed or is still
        going after ``timeout`` seconds."""
        if not self._loaded.wait(timeout):
            raise RuntimeError(f"the model is still loading after {timeout:g} s")
        self.check_health()

    # -- for backends ----------------------------------------------------------------------
    def _load(self) -> None:
        raise NotImplementedError

    def _loop(self) -> None:
        """Serve submissions from ``self._pending`` forever."""
        raise NotImplementedError

    def _stop_reason(self, submission: Submission, now: float) -> str | None:
        """ "cancelled" or "timeout" when ``submission`` must end now, else None."""
        if submission.request.request_id in self._aborted:
            return "cancelled"
        deadline = submission.deadline
        if deadline is not None and now > deadline:
            return "timeout"
        return None

    def _forget(self, request_id: str) -> None:
        with self._lock:
            self._aborted.discard(request_id)

    def _unload(self) -> None:
        """Drop the model's memory; backends extend it."""

    def _refuse_rest(self, message: str) -> None:
        while True:
            try:
                submission = self._pending.get_nowait()
            except queue.Empty:
                return
            if submission is not None:
                submission.end(EngineError(ErrorCode.MODEL_UNLOADED, message))

    # -- serving thread --------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._load()
        except Exception as exc:  # a model that cannot load must not take the worker down
            logger.exception("engine %s failed to load", self.name)
            self._load_error = exc
        finally:
            self._loaded.set()
        if self._load_error is not None:
            while not self._closing.is_set():
                submission = self._pending.get()
                if submission is not None:
                    submission.end(
                        EngineError(
                            ErrorCode.MODEL_LOAD_FAILED,
                            f"The model could not be loaded: {self._load_error}",
                        )
                    )
            return
        try:
            self._loop()
        finally:
            self._refuse_rest("The model was unloaded from this worker; try again.")
            self._unload()
            logger.info("engine %s unloaded", self.name)


class QueuedEngine(EngineThread):
    """Requests in arrival order, one at a time: backends implement ``_serve``."""

    def _serve(self, submission: Submission, check: Callable[[], None]) -> None:
        """Run ``submission`` to its end: its text through ``submission.add`` and exactly one
        Finished or EngineError through ``submission.end``.

        Call ``check()`` before each step: it raises StopRequested on abort or deadline.
        """
        raise NotImplementedError

    def _loop(self) -> None:
        while not self._closing.is_set():
            submission = self._pending.get()
            if submission is None:
                continue

            def check(submission: Submission = submission) -> None:
                reason = self._stop_reason(submission, time.monotonic())
                if reason is not None:
                    raise StopRequested(reason)

            try:
                self._serve(submission, check)
            except Exception:
                logger.exception(
                    "engine %s failed on request %s", self.name, submission.request.request_id
                )
                submission.end(
                    EngineError(ErrorCode.INTERNAL, "The model failed while generating; try again.")
                )
            finally:
                self._forget(submission.request.request_id)
