"""A deterministic stand-in engine for fast tests of everything around the model.

It "generates" the words of ``Echo: <last user message>`` (or of the prompt), one word per step,
honouring max_tokens, stop sequences, aborts and deadlines the way the real backend does. A message
containing ``[fail]`` makes it fail mid-stream, as a broken model would.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from apps.core.errors import ErrorCode
from apps.inference.protocol import EngineError, Finished, GenerationRequest, ModelSpec, TokenDelta

from .scheduler import Emit, QueuedEngine, StopRequested
from .text import StopTextTracker


class FakeEngine(QueuedEngine):
    name = "fake"

    def __init__(self, spec: ModelSpec, *, step_seconds: float = 0.02) -> None:
        self.spec = spec
        self.step_seconds = step_seconds
        super().__init__()

    def _load(self) -> None:
        pass

    def _serve(self, request: GenerationRequest, emit: Emit, check: Callable[[], None]) -> None:
        if request.messages is not None:
            prompt = " ".join(m["content"] for m in request.messages)
            source = request.messages[-1]["content"]
        else:
            prompt = source = request.prompt or ""
        prompt_tokens = len(prompt.split())
        params = request.params
        if prompt_tokens + params.max_tokens > self.spec.context_length:
            emit(
                EngineError(
                    ErrorCode.CONTEXT_LENGTH_EXCEEDED,
                    f"The prompt has {prompt_tokens} tokens and max_tokens is "
                    f"{params.max_tokens}; together they exceed the model's context of "
                    f"{self.spec.context_length} tokens.",
                )
            )
            return
        words = ("Echo: " + source).split(" ")
        tracker = StopTextTracker(params.stop)
        produced: list[str] = []
        reason = "length"
        ran = False  # a request stopped before its first step used no tokens
        try:
            for i, word in enumerate(words):
                if len(produced) >= params.max_tokens:
                    break
                check()
                ran = True
                time.sleep(self.step_seconds)
                if "[fail]" in word:
                    emit(EngineError(ErrorCode.INTERNAL, "The fake model failed on purpose."))
                    return
                produced.append(word if i == 0 else " " + word)
                new = tracker.update("".join(produced))
                if new:
                    emit(TokenDelta(new, 1))
                if tracker.stopped:
                    reason = "stop"
                    break
            else:
                reason = "stop"
        except StopRequested as stop:
            reason = stop.reason
        tail = tracker.update(tracker.text, final=True) if not tracker.stopped else ""
        if tail:
            emit(TokenDelta(tail, 0))
        emit(Finished(reason, prompt_tokens if ran else 0, len(produced)))  # type: ignore[arg-type]
