"""What a worker process has served since it started: counters and histograms that its heartbeat
carries to the database, and ``/metrics`` exposes per worker (``apps.core.metrics``)."""

from __future__ import annotations

import bisect
import threading
from typing import Any

# Upper bounds in seconds (Prometheus "le"); the last bucket, +Inf, is implicit.
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TOKEN_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)

_lock = threading.Lock()


def _histogram(bounds: tuple[float, ...]) -> dict[str, Any]:
    return {"bounds": list(bounds), "counts": [0] * (len(bounds) + 1), "sum": 0.0}


def _empty() -> dict[str, Any]:
    return {
        "tokens_generated": 0,
        "prompt_tokens": 0,
        "cached_prompt_tokens": 0,  # prompt tokens whose KV an earlier request left
        "prefix_hits": 0,  # generations that found part of their prompt cached
        "generations": {},  # final status -> count
        "ttft_seconds": _histogram(TTFT_BUCKETS),
        "token_seconds": _histogram(TOKEN_BUCKETS),
    }


_state = _empty()


def _observe(histogram: dict[str, Any], value: float, count: int = 1) -> None:
    index = bisect.bisect_left(histogram["bounds"], value)
    histogram["counts"][index] += count
    histogram["sum"] += value * count


def record_generation(
    *,
    status: str,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int = 0,
    ttft_seconds: float | None,
    seconds_per_token: float | None,
) -> None:
    """Count one finished generation. Per-token latency is observed once per token after the
    first, at the generation's mean inter-token time."""
    with _lock:
        _state["tokens_generated"] += completion_tokens
        _state["prompt_tokens"] += prompt_tokens
        _state["cached_prompt_tokens"] += cached_tokens
        _state["prefix_hits"] += cached_tokens > 0
        _state["generations"][status] = _state["generations"].get(status, 0) + 1
        if ttft_seconds is not None:
            _observe(_state["ttft_seconds"], ttft_seconds)
        if seconds_per_token is not None and completion_tokens > 1:
            _observe(_state["token_seconds"], seconds_per_token, completion_tokens - 1)


def snapshot() -> dict[str, Any]:
    """A copy of the figures, JSON-safe."""
    import copy

    with _lock:
        return copy.deepcopy(_state)


def reset() -> None:
    global _state
    with _lock:
        _state = _empty()
