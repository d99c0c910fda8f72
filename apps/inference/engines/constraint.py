"""Constrained decoding: each step, a request with a grammar (``SamplingParams.grammar``, from
``apps/inference/grammars.py``) may only pick the tokens its grammar allows next. Through
llguidance on both engines: it computes the allowed set over the model's own vocabulary (about
0.15 ms a token for a four-field JSON schema on this project's CPUs) and advances with each token
taken. Each request has its own matcher, so one request's grammar never touches its neighbours'
logits.

The grammar's end is the model's end: once the grammar allows nothing but the end of the text,
the answer finishes (``finish_reason: "stop"``); cut by ``max_tokens`` first, it ends
``"length"``, unfinished, as any other answer.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import llguidance
import llguidance.hf
import numpy as np

_tokenizers: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _llg_tokenizer(tokenizer: Any, end_ids: frozenset[int], vocab_size: int) -> Any:
    """llguidance's view of ``tokenizer`` (about a second to build, so one per tokenizer), whose
    end-of-text tokens are the engine's own."""
    with _lock:
        known = _tokenizers.get(tokenizer)
        if known is None or known[0] != (end_ids, vocab_size):
            built = llguidance.hf.from_tokenizer(
                tokenizer, n_vocab=vocab_size, eos_token=sorted(end_ids)
            )
            known = _tokenizers[tokenizer] = ((end_ids, vocab_size), built)
        return known[1]


class ConstraintError(Exception):
    """The grammar cannot be used with this model's vocabulary (the message says why)."""


class Constraint:
    """One request's grammar as it stands: ``allow`` masks a row of logits to what may come
    next, ``advance`` takes the chosen token, ``complete`` says the grammar has ended."""

    def __init__(self, grammar: str, tokenizer: Any, *, end_ids: set[int], vocab_size: int) -> None:
        llg = _llg_tokenizer(tokenizer, frozenset(end_ids), vocab_size)
        self.matcher = llguidance.LLMatcher(llg, grammar)
        if self.matcher.is_error():
            raise ConstraintError(self.matcher.get_error())
        self.vocab_size = vocab_size
        self.bitmask = np.zeros((vocab_size + 31) // 32, dtype=np.int32)

    def allow(self, logits: np.ndarray) -> np.ndarray:
        """A copy of ``logits`` with every token the grammar forbids next at -inf."""
        self.matcher.unsafe_compute_mask_ptr(self.bitmask.ctypes.data, self.bitmask.nbytes)
        allowed = np.unpackbits(self.bitmask.view(np.uint8), bitorder="little")
        return np.where(allowed[: logits.size].astype(bool), logits, -np.inf)

    def advance(self, token: int) -> None:
        """Take ``token`` (one ``allow`` permitted). Raises ConstraintError when the grammar
        refuses it, which only a bug could cause."""
        if not self.matcher.consume_token(token):
            raise ConstraintError(self.matcher.get_error())

    @property
    def complete(self) -> bool:
        """Whether the grammar has ended: nothing may follow but the end of the text."""
        return bool(self.matcher.is_stopped())
