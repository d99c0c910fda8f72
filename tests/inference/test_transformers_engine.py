"""The transformers backend on a tiny random model (fast), then on the real packaged model."""

from __future__ import annotations

import threading
import uuid

import pytest

from apps.inference.engines.thread import Pacing
from apps.inference.engines.transformers_backend import TransformersEngine
from apps.inference.protocol import (
    EngineError,
    Finished,
    GenerationRequest,
    Idle,
    ModelSpec,
    SamplingParams,
    TokenDelta,
)


def run(engine, *, messages=None, prompt=None, deadline_s=None, **params):
    request = GenerationRequest(
        request_id=str(uuid.uuid4()),
        params=SamplingParams(**params),
        messages=messages,
        prompt=prompt,
        deadline_s=deadline_s,
    )
    events = [e for e in engine.generate(request) if not isinstance(e, Idle)]
    text = "".join(e.text for e in events if isinstance(e, TokenDelta))
    return text, events[-1], events


@pytest.fixture(scope="module")
def tiny_engine(tiny_model_dir):
    spec = ModelSpec(
        key="tiny@1", source_kind="local", source=str(tiny_model_dir), context_length=128
    )
    # Every token its own delta, so that a test can stop the stream after three.
    unpaced = Pacing(seconds=0.0, per_second=float("inf"))
    engine = TransformersEngine(spec, cache_dir=tiny_model_dir, dtype="float32", pacing=unpaced)
    engine.wait_loaded(timeout=60)
    return engine


HELLO = [{"role": "user", "content": "Hello"}]


def test_greedy_is_deterministic_and_respects_max_tokens(tiny_engine):
    first = run(tiny_engine, messages=HELLO, temperature=0, max_tokens=12)
    second = run(tiny_engine, messages=HELLO, temperature=0, max_tokens=12)
    assert first[0] == second[0]
    finished = first[1]
    assert isinstance(finished, Finished)
    assert finished.completion_tokens <= 12
    if finished.finish_reason == "length":
        assert finished.completion_tokens == 12


def test_a_seed_repeats_a_sampled_answer(tiny_engine):
    a = run(
        tiny_engine, messages=HELLO, temperature=1.0, top_k=50, top_p=0.9, seed=7, max_tokens=16
    )
    b = run(
        tiny_engine, messages=HELLO, temperature=1.0, top_k=50, top_p=0.9, seed=7, max_tokens=16
    )
    c = run(
        tiny_engine, messages=HELLO, temperature=1.0, top_k=50, top_p=0.9, seed=8, max_tokens=16
    )
    assert a[0] == b[0]
    assert a[0] != c[0]


def test_prompt_over_the_context_is_an_error_not_a_truncation(tiny_engine):
    text, last, events = run(tiny_engine, prompt="word " * 200, max_tokens=8)
    assert text == ""
    assert isinstance(last, EngineError)
    assert last.code == "context_length_exceeded"
    assert "exceed the model's context of 128 tokens" in last.message


def test_prompt_plus_max_tokens_over_the_context_is_an_error(tiny_engine):
    _, last, _ = run(tiny_engine, messages=HELLO, max_tokens=127)
    assert isinstance(last, EngineError) and last.code == "context_length_exceeded"


def test_abort_stops_the_request_and_keeps_its_text(tiny_engine):
    request = GenerationRequest(
        request_id="abort-me",
        params=SamplingParams(temperature=0, max_tokens=100),
        prompt="Once upon a time",
    )
    stream = tiny_engine.generate(request)
    collected = []
    for event in stream:
        if isinstance(event, TokenDelta):
            collected.append(event)
            if len(collected) == 3:
                tiny_engine.abort("abort-me")
        if isinstance(event, Finished):
            break
    assert event.finish_reason == "cancelled"
    assert 3 <= event.completion_tokens < 100


def test_deadline_ends_the_request(tiny_engine):
    _, last, _ = run(tiny_engine, prompt="Once", temperature=0, max_tokens=100, deadline_s=0.0001)
    assert isinstance(last, Finished) and last.finish_reason == "timeout"


def test_requests_from_many_threads_each_get_their_own_stream(tiny_engine):
    results: dict[int, str] = {}
    alone = {
        i: run(tiny_engine, prompt=f"Story {i}", temperature=0, max_tokens=8)[0] for i in range(3)
    }

    def worker(i: int) -> None:
        results[i] = run(tiny_engine, prompt=f"Story {i}", temperature=0, max_tokens=8)[0]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == alone


def test_a_model_that_cannot_load_reports_it_on_each_request(tmp_path):
    spec = ModelSpec(
        key="broken@1", source_kind="local", source=str(tmp_path / "missing"), context_length=128
    )
    engine = TransformersEngine(spec, cache_dir=tmp_path)
    _, last, _ = run(engine, prompt="hi")
    assert isinstance(last, EngineError)
    assert last.code == "model_load_failed" and last.code.retryable
    assert "is not a folder" in last.message
    with pytest.raises(RuntimeError):
        engine.check_health()


# -- the real packaged model -------------------------------------------------------------------


@pytest.mark.model
def test_smollm_answers_a_question(smollm_torch):
    text, last, _ = run(
        smollm_torch,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        temperature=0,
        max_tokens=24,
    )
    assert isinstance(last, Finished)
    assert "Paris" in text
    assert last.prompt_tokens > 10


@pytest.mark.model
def test_smollm_stops_at_a_stop_sequence(smollm_torch):
    question = [{"role": "user", "content": "What is the capital of France?"}]
    full, _, _ = run(smollm_torch, messages=question, temperature=0, max_tokens=24)
    cut, last, _ = run(
        smollm_torch, messages=question, temperature=0, max_tokens=24, stop=["Paris"]
    )
    assert last.finish_reason == "stop"
    assert cut == full[: full.index("Paris")]
