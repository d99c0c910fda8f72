"""The llama.cpp engine with the packaged model: what it shares with the torch engine is tested in
test_batching.py (both engines run those tests); here, what is its own: slots freed at once, prefix
reuse that never changes an answer, slots evicted least recently used, the per-slot KV budget,
an answer resumed from its stored tokens, and a tokenizer that agrees with llama.cpp's."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from django.conf import settings

from apps.inference.engines.gguf import gguf_file, missing_instructions, requantized
from apps.inference.engines.llamacpp import LlamaCppEngine
from apps.inference.protocol import EngineError, Finished, GenerationRequest, Resume, TokenDelta

from .conftest import SMOLLM
from .test_batching import ask, collect, outcome, request, with_logprobs

pytestmark = pytest.mark.model

DOCUMENT = " ".join(
    f"Paragraph {i}: the committee met on day {i} and agreed on item {i * 7 % 13}."
    for i in range(40)
)


# llama.cpp's CPU kernels compute a one-token step, and a prompt chunk of 64 tokens or more, by
# other paths than other shapes: with a prefix reused, the same position's log-probabilities
# differ by up to 0.32 among the likeliest tokens (measured on AVX2; README, "The serving
# engine"), so a greedy choice nearer a tie than that may turn. Cells from the wrong place (a
# position off, another slot's text) move them by whole units.
ROUNDING = 0.5


def greedy_answer(served: LlamaCppEngine, messages) -> list[tuple[str, float, float]]:
    """The greedy answer: each token, its log-probability and its margin over the runner-up."""
    _, entries, (last, _) = with_logprobs(
        served, request(messages=messages, temperature=0, max_tokens=12, logprobs=2)
    )
    assert isinstance(last, Finished), last
    return [
        (e["token"], e["logprob"], e["logprob"] - e["top_logprobs"][1]["logprob"]) for e in entries
    ]


def assert_within_rounding(warm, cold) -> None:
    """``warm`` is ``cold``'s answer, each token's log-probability within ROUNDING, until the
    two part at a near tie (a margin under twice ROUNDING), if they do."""
    for (token, logprob, _), (cold_token, cold_logprob, margin) in zip(warm, cold, strict=True):
        if token != cold_token:
            assert margin < 2 * ROUNDING, f"{token!r} for {cold_token!r} at a margin of {margin}"
            return
        assert abs(logprob - cold_logprob) < ROUNDING, (token, logprob, cold_logprob)


def engine(model_cache_dir, **options) -> LlamaCppEngine:
    options = {
        "max_batch": 2,
        "kv_budget_bytes": 64 << 20,
        "weight_type": settings.INFERENCE_GGUF_TYPE,
        **options,
    }
    served = LlamaCppEngine(SMOLLM, cache_dir=model_cache_dir, **options)
    served.wait_loaded(timeout=300)
    return served


@pytest.fixture(scope="module")
def two_slots(model_cache_dir):
    served = engine(model_cache_dir)
    yield served
    served.close()


def test_a_cancel_frees_the_slot_for_the_waiting_request(model_cache_dir):
    served = engine(model_cache_dir, max_batch=1)
    try:
        first = request(prompt="1, 2, 3,", temperature=0, max_tokens=2000)
        second = request(messages=ask("Say hello."), temperature=0, max_tokens=8)
        first_stream = served.generate(first)
        assert any(isinstance(e, TokenDelta) for e in first_stream)  # the one slot is taken
        result: dict[str, object] = {}
        waiter = threading.Thread(target=lambda: result.update(done=collect(served, second)))
        waiter.start()
        served.abort(first.request_id)
        ended = next(e for e in first_stream if isinstance(e, Finished))
        assert ended.finish_reason == "cancelled" and ended.completion_tokens < 2000
        waiter.join(60)
        text, reason, tokens = outcome(result["done"])  # type: ignore[arg-type]
        assert text and tokens > 0
    finally:
        served.close()


def test_a_second_turn_reuses_the_first_turns_cells_and_answers_as_a_cold_run_does(
    two_slots, model_cache_dir
):
    first_turn = ask(f"Here is a report.\n\n{DOCUMENT}\n\nWhat did the committee do on day 3?")
    answer, _ = collect(two_slots, request(messages=first_turn, temperature=0, max_tokens=24))
    second_turn = [
        *first_turn,
        {"role": "assistant", "content": answer},
        {"role": "user", "content": "And on day 5?"},
    ]
    before = dict(two_slots.stats)
    warm = greedy_answer(two_slots, second_turn)
    hits = two_slots.stats["prefix_hits"] - before["prefix_hits"]
    reused = two_slots.stats["prefix_tokens"] - before["prefix_tokens"]
    assert hits == 1 and reused > 400  # the whole first turn was in the slot's cells

    cold_engine = engine(model_cache_dir)
    try:
        cold = greedy_answer(cold_engine, second_turn)
        assert cold_engine.stats["prefix_hits"] == 0
    finally:
        cold_engine.close()
    assert_within_rounding(warm, cold)


WORDS = ("apple", "river", "candle")


def test_slots_are_evicted_least_recently_used_and_answers_stay_within_rounding(
    two_slots, model_cache_dir
):
    # The prompts part where the answer is decided: cells from another prompt would show.
    questions = [f"{DOCUMENT}\n\nSay the word {w}, and nothing else." for w in WORDS]
    first = [greedy_answer(two_slots, ask(q)) for q in questions]
    # Asked again in reverse, the most recent is found whole where it was left, the others from
    # the document on.
    before = dict(two_slots.stats)
    again = [greedy_answer(two_slots, ask(q)) for q in reversed(questions)]
    assert two_slots.stats["prefix_hits"] - before["prefix_hits"] == 3
    for question, warm, warmer in zip(questions, first, reversed(again), strict=True):
        cold_engine = engine(model_cache_dir, max_batch=1)
        try:
            cold = greedy_answer(cold_engine, ask(question))
        finally:
            cold_engine.close()
        assert_within_rounding(warm, cold)
        assert_within_rounding(warmer, cold)


def test_a_request_over_a_slots_cells_is_refused_with_the_reason(two_slots):
    cells = two_slots.cells_per_slot
    long_prompt = "word " * cells
    _, last = collect(two_slots, request(prompt=long_prompt, temperature=0, max_tokens=16))
    assert isinstance(last, EngineError) and last.code == "context_length_exceeded"
    assert f"holds {cells} positions per request" in last.message
    # The engine serves on.
    text, reason, _ = outcome(
        collect(two_slots, request(messages=ask("Hi"), temperature=0, max_tokens=4))
    )
    assert text and reason in ("stop", "length")


def test_an_answer_resumed_from_its_tokens_ends_as_an_uninterrupted_run(two_slots):
    question = ask("Count from 1 to 40, separated by commas.")
    whole = [
        e for e in two_slots.generate(request(messages=question, temperature=0, max_tokens=60))
    ]
    deltas = [e for e in whole if isinstance(e, TokenDelta)]
    text = "".join(d.text for d in deltas)
    cut = len(deltas) // 2
    resume = Resume(
        token_ids=tuple(t for d in deltas[:cut] for t in d.token_ids),
        text="".join(d.text for d in deltas[:cut]),
    )
    resumed = GenerationRequest(
        request_id="resumed",
        params=request(temperature=0, max_tokens=60).params,
        messages=question,
        resume=resume,
    )
    rest, last = collect(two_slots, resumed)
    assert isinstance(last, Finished) and last.completion_tokens == whole[-1].completion_tokens
    assert resume.text + rest == text


def test_the_tokenizer_agrees_with_llama_cpps_own(two_slots):
    import llama_cpp as llama

    vocab = llama.llama_model_get_vocab(two_slots._model)
    text = "Playground's mascot is Pixel, a purple otter. Ça va? 12345 \u4f60\u597d"
    raw = text.encode()
    buffer = (llama.llama_token * 256)()
    count = llama.llama_tokenize(vocab, raw, len(raw), buffer, 256, False, False)
    assert list(buffer[:count]) == two_slots.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_a_build_for_another_cpu_is_named_before_it_runs():
    built = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | FMA = 1 | AVX512 = 1 | AVX512_BF16 = 1 | OPENMP = 1 | "
    zen3 = "processor : 0\nflags : fpu sse3 avx avx2 fma f16c bmi2\n"
    assert missing_instructions(built, zen3) == ["AVX512", "AVX512_BF16"]
    zen4 = zen3.replace("bmi2", "bmi2 avx512f avx512_bf16")
    assert missing_instructions(built, zen4) == []


def test_the_weights_are_rewritten_once_by_llama_cpps_quantizer(tmp_path):
    source = gguf_file(SMOLLM)
    first = requantized(source, "q8_0", tmp_path, threads=2)
    written = first.stat().st_mtime_ns
    assert requantized(source, "q8_0", tmp_path, threads=2) == first
    assert first.stat().st_mtime_ns == written  # kept, not written again
    assert first.stat().st_size > source.stat().st_size  # 8-bit blocks outweigh the 4-bit ones
    assert not list(tmp_path.rglob("*.partial"))


def test_batch_requests_pause_while_an_interactive_one_runs_and_lose_nothing(model_cache_dir):
    """An interactive request overtakes Batch API requests: they pause (their cells kept) while
    it runs, and afterwards go on to the very answers they give undisturbed."""
    served = engine(model_cache_dir, max_batch=3)
    try:

        def batch_request(text: str) -> GenerationRequest:
            return GenerationRequest(
                request_id=str(uuid.uuid4()),
                params=request(temperature=0, max_tokens=120).params,
                messages=ask(text),
                batch=True,
            )

        questions = ["Write a story about a fox.", "Write a story about a ship."]
        alone = {q: collect(served, batch_request(q))[0] for q in questions}
        arrivals: dict[str, list[tuple[float, TokenDelta]]] = {q: [] for q in questions}

        def follow(question: str) -> None:
            for event in served.generate(batch_request(question)):
                if isinstance(event, TokenDelta):
                    arrivals[question].append((time.monotonic(), event))

        threads = [threading.Thread(target=follow, args=(q,)) for q in questions]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while not all(sum(e.tokens for _, e in arrivals[q]) >= 5 for q in questions):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        first = last = None
        interactive = request(messages=ask("Count from 1 to 40."), temperature=0, max_tokens=48)
        for event in served.generate(interactive):
            if isinstance(event, TokenDelta):
                first = first or time.monotonic()
            elif isinstance(event, Finished):
                last = time.monotonic()
                assert event.completion_tokens == 48
        for thread in threads:
            thread.join(120)
        assert first is not None and last is not None
        for question in questions:
            # Paused: nothing of theirs came while it ran (a grace for a delta under way).
            during = [e for at, e in arrivals[question] if first + 0.25 < at < last]
            assert sum(e.tokens for e in during) == 0, (question, last - first)
            # Resumed afterwards, to the answer they give alone.
            assert arrivals[question][-1][0] > last
            assert "".join(e.text for _, e in arrivals[question]) == alone[question]
    finally:
        served.close()
