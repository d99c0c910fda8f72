"""Picking the next token from a row of logits, per request, in numpy, for both engines: the
parameters' documented semantics (``apps/inference/protocol.py``, the README's parameter table).

In order: ``logit_bias`` is added to the logits of the ids it names (-100 all but bans a token,
+100 all but forces it); the repetition penalty applies over every id the request has seen (prompt
and output): positive logits are divided by it, negative ones multiplied; ``frequency_penalty``
times the number of times a token was generated so far, plus ``presence_penalty`` once if it was,
is subtracted from its logit (OpenAI's definition: only generated tokens count). Then temperature
0 is greedy (argmax); otherwise the logits are divided by the temperature, cut to the ``top_k``
highest, cut to the smallest set whose probability reaches ``top_p``, cut to the tokens at least
``min_p`` times as likely as the likeliest, and one token is drawn from what is left with the
request's own generator (seeded when the request gives a seed, so its output repeats whatever runs
beside it).

Written here rather than through llama.cpp's sampler chain: its penalty keeps a window of recent
tokens rather than every id seen, and its random draws would tie a seed's output to one backend.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from apps.inference.protocol import SamplingParams


def request_rng(params: SamplingParams) -> np.random.Generator:
    """A request's own generator: from its seed, or from the OS when it gives none."""
    seed = params.seed if params.seed is not None else int.from_bytes(os.urandom(8), "little")
    return np.random.default_rng(seed)


def sample(
    logits: np.ndarray,
    params: SamplingParams,
    seen: set[int],
    rng: np.random.Generator,
    counts: Mapping[int, int] | None = None,
) -> int:
    """The next token for one request (``counts``: how often each token was generated so far).
    ``logits`` is read, never written (it may be a view of the engine's own buffer)."""
    if params.is_greedy:
        return int(np.argmax(logits))
    logits = logits.astype(np.float64)  # a copy, in the precision the cuts are made in
    if params.logit_bias:
        ids = np.fromiter(params.logit_bias, dtype=np.int64, count=len(params.logit_bias))
        logits[ids] += np.fromiter(params.logit_bias.values(), dtype=np.float64, count=ids.size)
    if params.repetition_penalty != 1.0 and seen:
        ids = np.fromiter(seen, dtype=np.int64, count=len(seen))
        picked = logits[ids]
        penalty = params.repetition_penalty
        logits[ids] = np.where(picked > 0, picked / penalty, picked * penalty)
    if (params.frequency_penalty or params.presence_penalty) and counts:
        ids = np.fromiter(counts, dtype=np.int64, count=len(counts))
        times = np.fromiter(counts.values(), dtype=np.float64, count=ids.size)
        logits[ids] -= times * params.frequency_penalty + (times > 0) * params.presence_penalty
    if params.temperature == 0.0:
        return int(np.argmax(logits))
    scaled = logits / params.temperature
    candidates = np.arange(scaled.size)
    if params.top_k and params.top_k < scaled.size:
        candidates = np.argpartition(scaled, -params.top_k)[-params.top_k :]
        scaled = scaled[candidates]
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    if params.top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        cumulative = np.cumsum(probs[order])
        keep = order[: int(np.searchsorted(cumulative - probs[order], params.top_p, "right"))]
        keep = keep if keep.size else order[:1]
        candidates, probs = candidates[keep], probs[keep] / probs[keep].sum()
    if params.min_p:
        keep = np.flatnonzero(probs >= params.min_p * probs.max())
        candidates, probs = candidates[keep], probs[keep] / probs[keep].sum()
    return int(candidates[rng.choice(probs.size, p=probs)])


def log_probs(logits: np.ndarray, token: int, top: int) -> tuple[float, list[tuple[int, float]]]:
    """``token``'s log-probability under the model's own distribution at this position (the
    softmax of the raw ``logits``, before any sampling parameter reshapes them), and the ``top``
    likeliest tokens with theirs, likeliest first (ties by id)."""
    row = logits.astype(np.float64)
    peak = row.max()
    normalizer = peak + np.log(np.exp(row - peak).sum())
    chosen = float(row[token] - normalizer)
    if not top:
        return chosen, []
    best = np.argpartition(-row, top - 1)[:top] if top < row.size else np.arange(row.size)
    best = best[np.lexsort((best, -row[best]))]
    return chosen, [(int(i), float(row[i] - normalizer)) for i in best]
