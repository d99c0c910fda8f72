"""Picking the next token from a row of logits, per request, in numpy: the parameters' documented
semantics (``apps/inference/protocol.py``), the same as the torch engine's ``batching.sample``.

The repetition penalty applies first, over every id the request has seen (prompt and output):
positive logits are divided by it, negative ones multiplied. Then temperature 0 is greedy
(argmax); otherwise the logits are divided by the temperature, cut to the ``top_k`` highest, cut
to the smallest set whose probability reaches ``top_p``, and one token is drawn from what is left
with the request's own generator (seeded when the request gives a seed, so its output repeats
whatever runs beside it).

Written here rather than through llama.cpp's sampler chain: its penalty keeps a window of recent
tokens rather than every id seen, and its random draws would tie a seed's output to one backend.
"""

from __future__ import annotations

import numpy as np

from apps.inference.protocol import SamplingParams


def is_greedy(params: SamplingParams) -> bool:
    return params.temperature == 0.0 and params.repetition_penalty == 1.0


def sample(
    logits: np.ndarray, params: SamplingParams, seen: set[int], rng: np.random.Generator
) -> int:
    """The next token for one request. ``logits`` is read, never written (it may be a view of
    the engine's own buffer)."""
    if params.repetition_penalty != 1.0 and seen:
        logits = logits.copy()
        ids = np.fromiter(seen, dtype=np.int64, count=len(seen))
        picked = logits[ids]
        penalty = params.repetition_penalty
        logits[ids] = np.where(picked > 0, picked / penalty, picked * penalty)
    if params.temperature == 0.0:
        return int(np.argmax(logits))
    scaled = logits.astype(np.float64) / params.temperature
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
    return int(candidates[rng.choice(probs.size, p=probs)])
