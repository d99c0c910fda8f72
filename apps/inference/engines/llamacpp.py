"""The llama.cpp backend: GGUF weights run by llama.cpp's kernels (on the CPU, or CUDA when the
installed build has it: every layer is then offloaded) under this platform's own scheduler.

One llama.cpp context per model, with one KV stream per slot (``INFERENCE_MAX_BATCH`` slots, the
KV budget split evenly between them: per-sequence streams keep each one's attention over its own
cells, measured faster than a unified cache). Every step is one ``llama_decode`` holding the next
token of every running request and chunks of the prompts still being read, at most
``INFERENCE_PREFILL_TOKENS`` prompt tokens a step (chunked prefill: a long prompt never stalls the
others). A request joins at the next step and leaves at once when it ends, is stopped or runs out
of time; its slot keeps the cells it filled.

Prefix reuse: a request goes to the idle slot whose cells begin with the longest run of its own
tokens (the previous turn of its conversation, a shared system prompt), and only the rest is
read; otherwise to the idle slot used least recently. What a slot holds is thus evicted least
recently used. A reused prefix holds what a cold run computes for its tokens, within rounding:
llama.cpp's CPU kernels round a one-token step and a long prompt chunk differently from other
shapes (measured in the README, "The serving engine"), so a greedy near tie may turn.

Fine-tunes: a LoRA version is a context of its own that applies its GGUF adapter (written at
deployment by ``gguf_export``) over its base's weights, which every engine serving the same file
in this process shares (``gguf.SharedModel``); a full fine-tune is a GGUF file of its own.

Tokens in and out go through the model's own tokenizer from transformers (read from the GGUF once
and cached), so chat prompts keep their anti-forgery encoding and text streams exactly as with
the torch backend; sampling is ``sampling.sample``'s.
"""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llama_cpp as llama
import numpy as np

from apps.core.errors import ErrorCode
from apps.inference.protocol import (
    EngineError,
    ModelSpec,
    Resume,
    SamplingParams,
)

from .gguf import SharedModel, check_build, gguf_file, gguf_tokenizer, lora_file, requantized
from .sampling import request_rng
from .text import Answer, answer_for, prompt_ids_for, wait_in_turn
from .thread import EngineThread, Pacing, Submission

logger = logging.getLogger(__name__)

PREFIX_MIN_TOKENS = 16  # a shorter common start is not worth choosing a slot for


@dataclass
class Slot:
    """One KV stream of the context: the tokens its cells hold, in position order."""

    seq_id: int
    tokens: list[int] = field(default_factory=list)
    running: Request | None = None
    last_used: float = 0.0


@dataclass
class Request:
    submission: Submission
    prompt_ids: list[int]
    context: list[int]  # the prompt, then the tokens of a resumed answer
    answer: Answer  # the tokens and text so far, stops and max_tokens
    rng: np.random.Generator
    fed: int = 0  # context tokens already in the slot's cells
    cached: int = 0  # prompt tokens found in the slot's cells at admission
    next_token: int = -1  # sampled, not yet in the cells
    slot: Slot | None = None

    @property
    def params(self) -> SamplingParams:
        return self.submission.request.params

    @property
    def reading(self) -> bool:
        return self.fed < len(self.context)


class _Batch:
    """A ``llama_batch`` over numpy arrays, filled with slices rather than one token at a time."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.token = np.zeros(capacity, np.int32)
        self.pos = np.zeros(capacity, np.int32)
        self.n_seq_id = np.ones(capacity, np.int32)
        self.seq = np.zeros(capacity, np.int32)
        self.logits = np.zeros(capacity, np.int8)
        pointer = ctypes.POINTER(ctypes.c_int32)
        base = self.seq.ctypes.data
        self._seq_ids = (pointer * capacity)(
            *[ctypes.cast(base + 4 * i, pointer) for i in range(capacity)]
        )
        self.struct = llama.llama_batch(
            n_tokens=0,
            token=self.token.ctypes.data_as(pointer),
            embd=None,
            pos=self.pos.ctypes.data_as(pointer),
            n_seq_id=self.n_seq_id.ctypes.data_as(pointer),
            seq_id=self._seq_ids,
            logits=self.logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)),
        )
        self.size = 0

    def add(
        self, tokens: list[int], start: int, seq_id: int, *, want_logits: bool, every: bool = False
    ) -> int:
        """Append ``tokens`` at positions from ``start``; returns the index of the last one.
        Logits come out for the last (``want_logits``), or for each (``every``)."""
        n, k = self.size, len(tokens)
        self.token[n : n + k] = tokens
        self.pos[n : n + k] = np.arange(start, start + k, dtype=np.int32)
        self.seq[n : n + k] = seq_id
        self.logits[n : n + k] = 1 if every else 0
        self.logits[n + k - 1] = 1 if want_logits or every else 0
        self.size = n + k
        return n + k - 1


class LlamaCppEngine(EngineThread):
    name = "llamacpp"

    def __init__(
        self,
        spec: ModelSpec,
        *,
        cache_dir: Path,
        threads: int = 0,
        max_batch: int = 32,
        kv_budget_bytes: int = 2 << 30,
        prefill_tokens: int = 256,
        weight_type: str = "keep",
        pacing: Pacing | None = None,
    ) -> None:
        self.spec = spec
        self.weight_type = weight_type
        self.cache_dir = cache_dir
        self.threads = threads or os.cpu_count() or 1
        self.max_batch = max_batch
        self.kv_budget_bytes = kv_budget_bytes
        self.prefill_tokens = prefill_tokens
        self.slots: list[Slot] = []
        self.waiting: deque[Request] = deque()
        self.weights = ""
        # For the tests and /metrics: the widest step, and prefix reuse.
        self.stats = {"widest": 0, "prefix_hits": 0, "prefix_tokens": 0}
        self._shared: SharedModel | None = None  # the weights, shared with other engines
        self._adapter: Any = None  # a LoRA version's adapter, applied by this context only
        self._adapter_bytes = 0
        super().__init__(pacing=pacing)

    @property  # type: ignore[override]
    def memory_bytes(self) -> int:
        """The adapter's bytes, and the weights' when this engine is their first holder."""
        shared = self._shared
        return self._adapter_bytes + (shared.bytes_for(self) if shared else 0)

    @memory_bytes.setter
    def memory_bytes(self, value: int) -> None:
        """``EngineThread`` starts every engine at 0; this one computes its own."""

    # -- loading ---------------------------------------------------------------------------
    def _load(self) -> None:
        try:
            self._load_model()
        except Exception:
            self._free()  # a failed load gives back what it took (the shared weights included)
            raise

    def _load_model(self) -> None:
        started = time.monotonic()
        self.gguf = gguf_file(self.spec)
        self.tokenizer = gguf_tokenizer(self.spec, self.gguf, self.cache_dir)
        llama.llama_backend_init()
        check_build()
        offload = llama.llama_supports_gpu_offload()
        if self.weight_type == "auto":
            self.weight_type = "keep" if offload else "q8_0"
        weights = self.gguf
        if self.weight_type != "keep":
            weights = requantized(self.gguf, self.weight_type, self.cache_dir, threads=self.threads)
        self._shared = SharedModel.acquire(weights, self, gpu_layers=999 if offload else 0)
        model = self._model = self._shared.pointer
        adapter = lora_file(self.spec)
        if adapter is not None:
            self._adapter = llama.llama_adapter_lora_init(model, str(adapter).encode())
            if not self._adapter:
                raise RuntimeError(f"llama.cpp could not read the adapter {adapter}")
            self._adapter_bytes = adapter.stat().st_size
        per_cell = _kv_bytes_per_cell(model)
        per_slot = self.kv_budget_bytes // per_cell // self.max_batch
        per_slot = min(self.spec.context_length, per_slot // 256 * 256)
        if per_slot < 256:
            raise RuntimeError(
                f"INFERENCE_KV_CACHE_MB gives {per_slot} positions per slot to "
                f"{self.max_batch} slots; raise it or lower INFERENCE_MAX_BATCH"
            )
        params = llama.llama_context_default_params()
        params.n_ctx = per_slot * self.max_batch
        params.n_seq_max = self.max_batch
        params.n_batch = params.n_ubatch = self.prefill_tokens + self.max_batch
        params.n_threads = params.n_threads_batch = self.threads
        params.flash_attn_type = 1  # on: measured 1.5 times as fast for one stream here
        params.kv_unified = False
        params.no_perf = True
        context = llama.llama_init_from_model(model, params)
        if not context:
            raise RuntimeError("llama.cpp could not create a context for the model")
        self._ctx = context
        if self._adapter:
            # This context applies the adapter (scale 1: its alpha / rank is in the file).
            adapters = (llama.llama_adapter_lora_p_ctypes * 1)(self._adapter)
            scales = (ctypes.c_float * 1)(1.0)
            if llama.llama_set_adapters_lora(context, adapters, 1, scales) != 0:
                raise RuntimeError(f"llama.cpp could not apply the adapter {adapter}")
        self._memory = llama.llama_get_memory(context)
        self.cells_per_slot = llama.llama_n_ctx_seq(context)
        vocab = llama.llama_model_get_vocab(model)
        self.n_vocab = llama.llama_vocab_n_tokens(vocab)
        self.eog = {t for t in range(self.n_vocab) if llama.llama_vocab_is_eog(vocab, t)}
        self.slots = [Slot(seq_id=i) for i in range(self.max_batch)]
        self._batch = _Batch(params.n_batch)
        self.weights = (
            f"llama.cpp, {self.gguf.name}"
            + (f" as {self.weight_type}" if self.weight_type != "keep" else "")
            + (f", LoRA {adapter}" if adapter else "")
            + (", offloaded to the GPU" if offload else "")
        )
        # The first decode pays for buffer allocation: here, not in a user's request.
        self._batch.size = 0
        self._batch.add([self.tokenizer.eos_token_id or 0] * 8, 0, 0, want_logits=True)
        self._decode()
        llama.llama_memory_seq_rm(self._memory, 0, -1, -1)
        logger.info(
            "loaded %s with llama.cpp (%d slots of %d positions, %d threads) in %.1fs",
            self.spec.key,
            self.max_batch,
            self.cells_per_slot,
            self.threads,
            time.monotonic() - started,
        )

    def _unload(self) -> None:
        message = "The model was unloaded from this worker; try again."
        for request in [*self._running(), *self.waiting]:
            self._error(request.submission, ErrorCode.MODEL_UNLOADED, message)
        self.waiting.clear()
        for slot in self.slots:
            slot.running = None
        self._free()

    def _free(self) -> None:
        if getattr(self, "_ctx", None):
            llama.llama_free(self._ctx)
            self._ctx = None
        if self._adapter:
            llama.llama_adapter_lora_free(self._adapter)
            self._adapter = None
        if self._shared is not None:
            self._shared.release(self)
            self._shared = None
        self._model = None

    # -- the loop --------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._closing.is_set():
            try:
                self._take_submissions(block=not self.waiting and not any(self._running()))
                self._drop_stopped()
                self._admit()
                if any(self._running()):
                    self._step()
            except Exception:
                # The serving thread must outlive any one failure: fail what was running, and
                # forget what the slots held (a failed decode leaves their cells uncertain).
                logger.exception("engine %s failed", self.name)
                for request in list(self._running()):
                    self._error(
                        request.submission,
                        ErrorCode.INTERNAL,
                        "The model failed while generating; try again.",
                    )
                    self._leave(request)
                for slot in self.slots:
                    llama.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
                    slot.tokens = []

    def _running(self) -> list[Request]:
        return [slot.running for slot in self.slots if slot.running is not None]

    def _take_submissions(self, *, block: bool) -> None:
        try:
            submission = self._pending.get() if block else self._pending.get_nowait()
            while True:
                if submission is not None:  # None: ``close`` woke the loop
                    self._prepare(submission)
                submission = self._pending.get_nowait()
        except queue.Empty:
            pass

    def _prepare(self, submission: Submission) -> None:
        request, params = submission.request, submission.request.params
        prompt_ids = prompt_ids_for(
            self.tokenizer,
            request,
            vocab_size=self.n_vocab,
            context_length=self.spec.context_length,
        )
        if isinstance(prompt_ids, EngineError):
            self._error(submission, prompt_ids.code, prompt_ids.message)
            return
        if len(prompt_ids) + params.max_tokens > self.cells_per_slot:
            self._error(
                submission,
                ErrorCode.CONTEXT_LENGTH_EXCEEDED,
                f"The prompt has {len(prompt_ids)} tokens and max_tokens is {params.max_tokens}; "
                f"this worker's KV cache holds {self.cells_per_slot} positions per request. "
                "Shorten the conversation or lower max_tokens.",
            )
            return
        answer = answer_for(
            submission, self.tokenizer, prompt_ids, end_ids=self.eog, vocab_size=self.n_vocab
        )
        if isinstance(answer, EngineError):
            self._error(submission, answer.code, answer.message)
            return
        entry = Request(
            submission=submission,
            prompt_ids=prompt_ids,
            context=list(prompt_ids),
            answer=answer,
            rng=request_rng(params),
        )
        if request.resume is not None and not self._resume(entry, request.resume):
            return
        wait_in_turn(self.waiting, entry)

    def _resume(self, request: Request, resume: Resume) -> bool:
        if not request.answer.resume(resume):
            self._error(
                request.submission,
                ErrorCode.INTERNAL,
                "The answer could not be continued from where it stopped; try again.",
            )
            return False
        request.context += resume.token_ids
        return True

    def _drop_stopped(self) -> None:
        now = time.monotonic()
        for request in list(self.waiting):
            reason = self._stop_reason(request.submission, now)
            if reason is not None:
                self.waiting.remove(request)
                self._finish(request, reason)
        for request in self._running():
            reason = self._stop_reason(request.submission, now)
            if reason is not None:
                self._finish(request, reason)
                self._leave(request)

    def _admit(self) -> None:
        """Give waiting requests idle slots, in arrival order: the slot whose cells share the
        longest start with the request, else the least recently used."""
        while self.waiting:
            idle = [slot for slot in self.slots if slot.running is None]
            if not idle:
                return
            request = self.waiting.popleft()
            shared, slot = max(
                ((_common(slot.tokens, request.context), slot) for slot in idle),
                key=lambda pair: (pair[0] >= PREFIX_MIN_TOKENS, pair[0], -pair[1].last_used),
            )
            if shared < PREFIX_MIN_TOKENS:
                slot = min(idle, key=lambda s: s.last_used)
                shared = 0
            # The last context token is always read again: its logits choose the next token.
            shared = min(shared, len(request.context) - 1)
            if request.answer.scores_prompt:
                shared = 0  # every prompt position's logits are wanted
            llama.llama_memory_seq_rm(self._memory, slot.seq_id, shared, -1)
            del slot.tokens[shared:]
            if shared:
                self.stats["prefix_hits"] += 1
                self.stats["prefix_tokens"] += shared
            request.fed = shared
            request.cached = min(shared, len(request.prompt_ids))
            request.slot = slot
            slot.running = request

    def _step(self) -> None:
        """One decode: every running request's next token, then prompt chunks within the step's
        budget; then each request whose logits came out takes its next token."""
        batch = self._batch
        batch.size = 0
        wants: list[tuple[Request, int]] = []
        running = self._running()
        if any(not r.submission.request.batch for r in running):
            # Batch API requests pause (their cells kept) while an interactive one runs.
            running = [r for r in running if not r.submission.request.batch]
        self._interval = self.pacing.interval(len(running))
        for request in running:
            if not request.reading:
                slot = request.slot
                assert slot is not None
                index = batch.add(
                    [request.next_token], len(slot.tokens), slot.seq_id, want_logits=True
                )
                slot.tokens.append(request.next_token)
                wants.append((request, index))
        budget = self.prefill_tokens
        scored: list[tuple[Request, int, int, int]] = []  # prompt chunks whose logits score them
        for request in running:
            if not request.reading or budget <= 0:
                continue
            slot = request.slot
            assert slot is not None
            chunk = request.context[request.fed : request.fed + budget]
            done = request.fed + len(chunk) == len(request.context)
            every = request.answer.scores_prompt
            index = batch.add(chunk, len(slot.tokens), slot.seq_id, want_logits=done, every=every)
            if every:
                scored.append((request, index - len(chunk) + 1, request.fed, len(chunk)))
            slot.tokens += chunk
            request.fed += len(chunk)
            budget -= len(chunk)
            if done:
                wants.append((request, index))
        self.stats["widest"] = max(self.stats["widest"], len(wants))
        self._decode()
        for request, first, start, count in scored:
            count = min(count, len(request.prompt_ids) - 1 - start)  # past the prompt: not scored
            rows = [self._logits(first + j) for j in range(max(count, 0))]
            request.answer.score_prompt(request.prompt_ids, rows, start)
        now = time.monotonic()
        for request, index in wants:
            request.slot.last_used = now  # type: ignore[union-attr]
            over = request.answer.ended  # a resumed answer that had already ended
            if over is not None:
                self._finish(request, over)
                self._leave(request)
                continue
            try:
                token = request.answer.choose(self._logits(index), request.rng)
                ended = self._accept(request, token)
            except Exception:
                logger.exception("sampling failed for %s", request.submission.request.request_id)
                self._error(
                    request.submission,
                    ErrorCode.INTERNAL,
                    "The model failed while generating; try again.",
                )
                ended = True
            if ended:
                self._leave(request)

    def _logits(self, index: int) -> np.ndarray:
        """The logits the last decode gave batch entry ``index`` (a view of llama.cpp's buffer,
        valid until the next decode)."""
        pointer = llama.llama_get_logits_ith(self._ctx, index)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))

    def _decode(self) -> None:
        batch = self._batch
        batch.struct.n_tokens = batch.size
        status = llama.llama_decode(self._ctx, batch.struct)
        if status != 0:
            raise RuntimeError(f"llama_decode failed ({status})")

    def _leave(self, request: Request) -> None:
        slot = request.slot
        if slot is not None and slot.running is request:
            slot.running = None
            slot.last_used = time.monotonic()

    # -- one request -----------------------------------------------------------------------
    def _accept(self, request: Request, token: int) -> bool:
        """Take the sampled ``token``; True when the request has finished."""
        request.next_token = token
        interval = self.pacing.of(request.submission.request, self._interval)
        reason = request.answer.take(token, self.eog, interval=interval)
        return reason is not None and self._finish(request, reason)

    def _finish(self, request: Request, reason: str) -> bool:
        read = request.fed > 0
        request.answer.finish(
            reason, len(request.prompt_ids) if read else 0, request.cached if read else 0
        )
        self._forget(request.submission.request.request_id)
        return True

    def _error(self, submission: Submission, code: ErrorCode, message: str) -> None:
        submission.end(EngineError(code, message))
        self._forget(submission.request.request_id)


def _common(held: list[int], wanted: list[int]) -> int:
    """How many tokens ``held`` and ``wanted`` share from their start."""
    limit = min(len(held), len(wanted))
    if not limit:
        return 0
    a = np.asarray(held[:limit], dtype=np.int64)
    b = np.asarray(wanted[:limit], dtype=np.int64)
    differ = np.flatnonzero(a != b)
    return int(differ[0]) if differ.size else limit


def _kv_bytes_per_cell(model: Any) -> int:
    """What one position of one sequence takes in the KV cache (keys and values in f16)."""
    layers = llama.llama_model_n_layer(model)
    heads = llama.llama_model_n_head(model)
    kv_heads = llama.llama_model_n_head_kv(model)
    head_dim = llama.llama_model_n_embd(model) // heads
    return 2 * layers * kv_heads * head_dim * 2
