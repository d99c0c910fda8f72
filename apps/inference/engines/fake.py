"""A deterministic stand-in engine for fast tests of everything around the model.

It "generates" the words of ``Echo: <last user message>`` (or of the prompt), one word per step,
honouring max_tokens, stop sequences, aborts, deadlines and resumed answers the way the real
backend does; a word's token id is its position. A message containing ``[fail]`` makes it fail
mid-stream, as a broken model would. Where log-probabilities are asked for, each word is
certain (log-probability 0, itself its only alternative), and so is each prompt word.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from apps.core.errors import ErrorCode
from apps.inference.protocol import EngineError, Finished, ModelSpec

from .text import StopTextTracker
from .thread import Pacing, QueuedEngine, StopRequested, Submission


class FakeEngine(QueuedEngine):
    name = "fake"

    def __init__(
        self, spec: ModelSpec, *, step_seconds: float = 0.02, pacing: Pacing | None = None
    ) -> None:
        self.spec = spec
        self.step_seconds = step_seconds
        super().__init__(pacing=pacing)

    def _load(self) -> None:
        pass

    def _serve(self, submission: Submission, check: Callable[[], None]) -> None:
        request = submission.request
        interval = self.pacing.interval(1)
        if request.messages is not None:
            prompt = " ".join(m["content"] for m in request.messages)
            source = request.messages[-1]["content"]
        else:
            prompt = source = request.prompt or ""
        prompt_tokens = len(prompt.split())
        params = request.params
        if prompt_tokens + params.max_tokens > self.spec.context_length:
            submission.end(
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
        produced = [w if i == 0 else " " + w for i, w in enumerate(words)]
        done = len(request.resume.token_ids) if request.resume else 0
        if done:
            tracker.update("".join(produced[:done]))
            tracker.sent = len(request.resume.text)  # type: ignore[union-attr]
        reason = "length"
        ran = False  # a request stopped before its first step used no tokens
        try:
            for i in range(done, len(words)):
                if i >= params.max_tokens:
                    break
                check()
                ran = True
                time.sleep(self.step_seconds)
                if "[fail]" in words[i]:
                    submission.end(
                        EngineError(ErrorCode.INTERNAL, "The fake model failed on purpose.")
                    )
                    return
                done = i + 1
                entries = (_certain(produced[i]),) if params.logprobs is not None else ()
                if params.prompt_logprobs and submission.prompt_logprobs is None and i == 0:
                    pieces = [w if j == 0 else " " + w for j, w in enumerate(prompt.split(" "))]
                    opening = {**_certain(pieces[0]), "logprob": None, "top_logprobs": None}
                    submission.prompt_logprobs = (opening, *map(_certain, pieces[1:]))
                text = tracker.update("".join(produced[:done]))
                submission.add(text, (i,), interval=interval, logprobs=entries)
                if tracker.stopped:
                    reason = "stop"
                    break
            else:
                reason = "stop"
        except StopRequested as stop:
            reason = stop.reason
        if not tracker.stopped:
            submission.pending_text += tracker.update(tracker.text, final=True)
        submission.end(Finished(reason, prompt_tokens if ran else 0, done))  # type: ignore[arg-type]


def _certain(word: str) -> dict[str, Any]:
    """A log-probability entry for a word the fake model cannot but write."""
    piece = {"token": word, "logprob": 0.0, "bytes": list(word.encode())}
    return {**piece, "top_logprobs": [piece]}
