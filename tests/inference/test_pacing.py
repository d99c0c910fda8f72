"""Stream pacing: the engine hands a stream its first text at once, then at most one delta per
flush interval, and the interval grows with the number of running streams."""

from __future__ import annotations

import uuid

from apps.inference.engines.fake import FakeEngine
from apps.inference.engines.thread import Pacing
from apps.inference.protocol import (
    Finished,
    GenerationRequest,
    Idle,
    ModelSpec,
    SamplingParams,
    TokenDelta,
)

WORDS = " ".join(f"w{i}" for i in range(40))


def deltas(pacing: Pacing) -> tuple[list[TokenDelta], Finished]:
    engine = FakeEngine(ModelSpec("fake@1", "local", "", 4096), step_seconds=0.01, pacing=pacing)
    try:
        request = GenerationRequest(
            request_id=str(uuid.uuid4()),
            params=SamplingParams(max_tokens=100),
            prompt=WORDS,
        )
        events = [e for e in engine.generate(request) if not isinstance(e, Idle)]
    finally:
        engine.close()
    last = events[-1]
    assert isinstance(last, Finished)
    return [e for e in events if isinstance(e, TokenDelta)], last


def test_a_paced_stream_sends_fewer_deltas_and_loses_nothing():
    unpaced, finished = deltas(Pacing(seconds=0.0, per_second=float("inf")))
    paced, paced_finished = deltas(Pacing(seconds=0.1))
    assert len(unpaced) == 41  # "Echo:" and the 40 words, one step each
    # 41 steps of at least 10 ms: the first text at once, then one delta per 100 ms at most.
    assert 2 <= len(paced) <= 8
    assert "".join(d.text for d in paced) == "".join(d.text for d in unpaced)
    assert [i for d in paced for i in d.token_ids] == list(range(41))
    assert paced_finished.completion_tokens == finished.completion_tokens == 41


def test_the_interval_grows_with_the_streams():
    pacing = Pacing(seconds=0.1, per_second=100.0)
    assert pacing.interval(1) == 0.1
    assert pacing.interval(10) == 0.1
    assert pacing.interval(32) == 0.32
