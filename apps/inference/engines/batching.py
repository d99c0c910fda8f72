"""Continuous batching: every running request of one model advances by one token per forward pass.

The serving thread loops: take in what was submitted (tokenize, check the context), admit waiting
requests while the batch has room (``max_batch`` rows, and the KV cache within ``kv_budget_bytes``
at its worst case), prefill each newcomer alone, then run one decode step for all rows together.
A request that arrives while others decode joins at the next step; one that finishes, is
cancelled or runs out of time leaves at once and its row is reused. Each request keeps its own
sampling parameters (``sampling.sample``, as on the llama.cpp engine), random generator (so a
seed repeats its output alone or in company), stop sequences and stream.

Backends provide ``_load``, which sets ``tokenizer``, ``decoder`` (see ``decoder.py``),
``eos_ids``, ``vocab_size`` (the logits' width) and ``device``.
"""

from __future__ import annotations

import logging
import queue
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from apps.core.errors import ErrorCode
from apps.inference.protocol import (
    EngineError,
    ModelSpec,
    Resume,
    SamplingParams,
)

from .sampling import request_rng
from .text import Answer, answer_for, prompt_ids_for, wait_in_turn
from .thread import EngineThread, Pacing, Submission

logger = logging.getLogger(__name__)

# Most prompt tokens prefilled in one pass: bounds the pause of the running requests meanwhile.
PREFILL_TOKENS = 256


@dataclass
class Sequence:
    submission: Submission
    prompt_ids: list[int]
    answer: Answer  # the tokens and text so far, stops and max_tokens
    rng: np.random.Generator
    resumed: list[int] = field(default_factory=list)  # tokens a lost worker generated before
    length: int = 0  # positions in its cache row
    last_token: int = -1  # sampled, not yet in the cache
    prefilled: bool = False

    @property
    def params(self) -> SamplingParams:
        return self.submission.request.params

    @property
    def context_ids(self) -> list[int]:
        """What is read before the next token: the prompt, and the tokens of a resumed answer."""
        return self.prompt_ids + self.resumed

    @property
    def reserved_positions(self) -> int:
        return len(self.prompt_ids) + self.params.max_tokens


class BatchingEngine(EngineThread):
    name = "batching"
    tokenizer: Any
    decoder: Any
    eos_ids: set[int]
    vocab_size: int
    device: torch.device

    def __init__(
        self,
        spec: ModelSpec,
        *,
        max_batch: int,
        kv_budget_bytes: int,
        pacing: Pacing | None = None,
    ) -> None:
        self.spec = spec
        self.max_batch = max_batch
        self.kv_budget_bytes = kv_budget_bytes
        self.active: list[Sequence] = []
        self.waiting: deque[Sequence] = deque()
        # The most rows one decode step has carried (the tests read it).
        self.stats = {"widest": 0}
        super().__init__(pacing=pacing)

    # -- the loop --------------------------------------------------------------------------
    def _loop(self) -> None:
        with torch.inference_mode():
            while not self._closing.is_set():
                try:
                    self._take_submissions(block=not self.active and not self.waiting)
                    self._drop_stopped()
                    self._admit()
                    if self.active:
                        self._step()
                except Exception:
                    # The serving thread must outlive any one failure: fail what was running.
                    logger.exception("engine %s failed", self.name)
                    self._fail(self.active)
                    self.active.clear()
                    self.decoder.release()

    def _fail(self, sequences: list[Sequence]) -> None:
        for sequence in sequences:
            self._error(
                sequence.submission,
                ErrorCode.INTERNAL,
                "The model failed while generating; try again.",
            )

    def _take_submissions(self, *, block: bool) -> None:
        try:
            submission = self._pending.get() if block else self._pending.get_nowait()
            while True:
                if submission is not None:  # None: ``close`` woke the loop
                    self._prepare(submission)
                submission = self._pending.get_nowait()
        except queue.Empty:
            pass

    def _unload(self) -> None:
        message = "The model was unloaded from this worker; try again."
        for sequence in [*self.active, *self.waiting]:
            self._error(sequence.submission, ErrorCode.MODEL_UNLOADED, message)
        self.active.clear()
        self.waiting.clear()
        self.decoder = self.tokenizer = None
        self.memory_bytes = 0

    def _prepare(self, submission: Submission) -> None:
        request = submission.request
        prompt_ids = prompt_ids_for(
            self.tokenizer,
            request,
            vocab_size=self.vocab_size,
            context_length=self.spec.context_length,
        )
        if isinstance(prompt_ids, EngineError):
            self._error(submission, prompt_ids.code, prompt_ids.message)
            return
        answer = answer_for(
            submission,
            self.tokenizer,
            prompt_ids,
            end_ids=self.eos_ids,
            vocab_size=self.vocab_size,
        )
        if isinstance(answer, EngineError):
            self._error(submission, answer.code, answer.message)
            return
        sequence = Sequence(
            submission=submission,
            prompt_ids=prompt_ids,
            answer=answer,
            rng=request_rng(request.params),
        )
        if request.resume is not None and not self._resume(sequence, request.resume):
            return
        wait_in_turn(self.waiting, sequence)

    def _resume(self, sequence: Sequence, resume: Resume) -> bool:
        if not sequence.answer.resume(resume):
            logger.error("resumed tokens of %s do not give its text", request_id_of(sequence))
            self._error(
                sequence.submission,
                ErrorCode.INTERNAL,
                "The answer could not be continued from where it stopped; try again.",
            )
            return False
        sequence.resumed = list(resume.token_ids)
        return True

    def _drop_stopped(self) -> None:
        now = time.monotonic()
        for sequence in list(self.waiting):
            reason = self._stop_reason(sequence.submission, now)
            if reason is not None:
                self.waiting.remove(sequence)
                self._finish(sequence, reason)
        stopped = []
        for row, sequence in enumerate(self.active):
            reason = self._stop_reason(sequence.submission, now)
            if reason is not None:
                self._finish(sequence, reason)
                stopped.append(row)
        self._remove(stopped)

    def _longest(self, extra: list[Sequence] | None = None) -> int:
        """The most positions any running request (or one of ``extra``) may reach."""
        return max(s.reserved_positions for s in [*self.active, *(extra or [])])

    def _fits(self, batch: list[Sequence]) -> bool:
        """Whether the running requests and ``batch`` fit the KV budget together."""
        rows = len(self.active) + len(batch)
        needed = self.decoder.cache_bytes(rows, self._longest(batch))
        return bool(needed <= self.kv_budget_bytes)

    def _admit(self) -> None:
        """Take waiting requests into the batch, in arrival order, while rows and the KV budget
        allow; prefill them together (up to PREFILL_TOKENS prompt tokens in one pass)."""
        batch: list[Sequence] = []
        tokens = 0
        while self.waiting and len(self.active) + len(batch) < self.max_batch:
            sequence = self.waiting[0]
            if batch and tokens + len(sequence.context_ids) > PREFILL_TOKENS:
                break
            if batch and (batch[0].answer.scores_prompt or sequence.answer.scores_prompt):
                break  # a prompt scored at every position is read alone
            if not self._fits([*batch, sequence]):
                if self.active or batch:
                    break  # it waits for rows to free up
                self.waiting.popleft()
                self._error(
                    sequence.submission,
                    ErrorCode.CONTEXT_LENGTH_EXCEEDED,
                    "The prompt and max_tokens need more memory than this worker's KV cache "
                    "budget; lower max_tokens.",
                )
                continue
            self.waiting.popleft()
            batch.append(sequence)
            tokens += len(sequence.context_ids)
        if batch:
            self._prefill(batch)
        if not self.active and not self.waiting:
            self.decoder.release()

    def _prefill(self, batch: list[Sequence]) -> None:
        first = len(self.active)
        scored = batch[0].answer.scores_prompt  # then it is alone in ``batch``
        try:
            self.decoder.reserve(first + len(batch), self._longest(batch))
            logits = self.decoder.prefill_many(
                list(range(first, first + len(batch))),
                [s.context_ids for s in batch],
                every=scored,
            )
            if scored:
                batch[0].answer.score_prompt(batch[0].prompt_ids, logits[:-1].cpu().numpy())
                logits = logits[-1:]
        except Exception:
            logger.exception("prefill failed for %d requests", len(batch))
            for sequence in batch:
                self._error(
                    sequence.submission,
                    ErrorCode.INTERNAL,
                    "The model failed while reading the prompt; try again.",
                )
            return
        self.active.extend(batch)
        finished = []
        for i, sequence in enumerate(batch):
            sequence.prefilled = True
            sequence.length = len(sequence.context_ids)
            done = sequence.answer.ended  # a resumed answer that had already ended
            if done is not None:
                ended = self._finish(sequence, done)
            else:
                ended = self._take(sequence, logits[i])
            if ended:
                finished.append(first + i)
        self._remove(finished)

    def _step(self) -> None:
        logits = self.decoder.decode(
            [s.last_token for s in self.active], [s.length for s in self.active]
        )
        self.stats["widest"] = max(self.stats["widest"], len(self.active))
        self._interval = self.pacing.interval(len(self.active))
        greedy = logits.argmax(dim=-1).tolist()
        finished = []
        for row, sequence in enumerate(self.active):
            sequence.length += 1
            # Argmax on the device, not one row at a time, where nothing else needs the row.
            plain = sequence.params.is_greedy and not sequence.answer.needs_logits
            if self._take(sequence, logits[row], greedy[row] if plain else None):
                finished.append(row)
        self._remove(finished)

    def _take(self, sequence: Sequence, logits: torch.Tensor, token: int | None = None) -> bool:
        """Sample ``sequence``'s next token (unless given) and take it; True when it has ended.
        One request's failure (a NaN in its logits, say) ends only that request."""
        try:
            if token is None:
                token = sequence.answer.choose(logits.float().cpu().numpy(), sequence.rng)
            return self._accept(sequence, token)
        except Exception:
            logger.exception("sampling failed for %s", sequence.submission.request.request_id)
            self._fail([sequence])
            return True

    def _remove(self, rows: list[int]) -> None:
        """Free ``rows`` (already finished), moving the last rows into the gaps."""
        for row in sorted(rows, reverse=True):
            last = len(self.active) - 1
            if row != last:
                self.decoder.move(last, row, self.active[last].length)
                self.active[row] = self.active[last]
            self.active.pop()
        if rows and self.active:
            self.decoder.reserve(len(self.active), self._longest())  # shrinks when worth it

    # -- one request -----------------------------------------------------------------------
    def _accept(self, sequence: Sequence, token: int) -> bool:
        """Take the sampled ``token`` into ``sequence``; True when the sequence has finished."""
        sequence.last_token = token
        interval = self.pacing.of(sequence.submission.request, self._interval)
        reason = sequence.answer.take(token, self.eos_ids, interval=interval)
        return reason is not None and self._finish(sequence, reason)

    def _finish(self, sequence: Sequence, reason: str) -> bool:
        sequence.answer.finish(reason, len(sequence.prompt_ids) if sequence.prefilled else 0)
        self._forget(sequence.submission.request.request_id)
        return True

    def _error(self, submission: Submission, code: ErrorCode, message: str) -> None:
        submission.end(EngineError(code, message))
        self._forget(submission.request.request_id)


def request_id_of(sequence: Sequence) -> str:
    return sequence.submission.request.request_id
