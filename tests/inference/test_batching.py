"""Continuous batching in the transformers engine: requests share forward passes and still get
exactly what they would get alone."""

from __future__ import annotations

import json
import math
import queue
import threading
import time
import uuid

import pytest

from apps.inference.engines.text import IncrementalDetokenizer
from apps.inference.engines.transformers_backend import TransformersEngine
from apps.inference.grammars import json_schema_grammar
from apps.inference.protocol import (
    EngineError,
    Finished,
    GenerationRequest,
    Idle,
    ModelSpec,
    SamplingParams,
    TokenDelta,
)
from tests.conftest import build_tiny_model
from tests.helpers import wait_for


def request(*, messages=None, prompt=None, **params) -> GenerationRequest:
    return GenerationRequest(
        request_id=str(uuid.uuid4()),
        params=SamplingParams(**params),
        messages=messages,
        prompt=prompt,
    )


def collect(engine, req: GenerationRequest) -> tuple[str, object]:
    events = [e for e in engine.generate(req) if not isinstance(e, Idle)]
    return "".join(e.text for e in events if isinstance(e, TokenDelta)), events[-1]


def together(engine, requests: list[GenerationRequest]) -> list[tuple[str, object]]:
    """Run ``requests`` at once, each from its own thread, as a worker's tasks do."""
    results: list[tuple[str, object] | None] = [None] * len(requests)
    start = threading.Barrier(len(requests))

    def run(i: int) -> None:
        start.wait()
        results[i] = collect(engine, requests[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


def outcome(result: tuple[str, object]) -> tuple[str, str, int]:
    text, last = result
    assert isinstance(last, Finished), last
    return text, last.finish_reason, last.completion_tokens


def ask(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}]


# -- the real packaged model -------------------------------------------------------------------


def token_ids(engine, req: GenerationRequest) -> tuple[list[int], object]:
    events = [e for e in engine.generate(req) if not isinstance(e, Idle)]
    return [t for e in events if isinstance(e, TokenDelta) for t in e.token_ids], events[-1]


@pytest.mark.model
def test_logit_bias_and_the_penalties_shape_the_answer_on_either_engine(smollm_engine):
    question = ask("Write a list of five fruits, one per line.")
    plain, _ = token_ids(smollm_engine, request(messages=question, temperature=0, max_tokens=40))
    banned, _ = token_ids(
        smollm_engine,
        request(messages=question, temperature=0, max_tokens=40, logit_bias={plain[0]: -100}),
    )
    assert banned[0] != plain[0]
    # Counting repeats its tokens (digits, dots, newlines): the penalties push them down.
    counting = ask("Count from 1 to 10.")

    def penalised_request() -> GenerationRequest:
        return request(
            messages=counting,
            temperature=0,
            max_tokens=40,
            frequency_penalty=2.0,
            presence_penalty=2.0,
        )

    plain, _ = token_ids(smollm_engine, request(messages=counting, temperature=0, max_tokens=40))
    penalised, _ = token_ids(smollm_engine, penalised_request())
    assert len(set(penalised)) / len(penalised) > len(set(plain)) / len(plain) + 0.2
    # A penalised greedy request beside others gets its solo answer.
    alone = outcome(collect(smollm_engine, penalised_request()))
    beside = together(
        smollm_engine,
        [penalised_request(), request(messages=ask("Say hello."), temperature=0, max_tokens=20)],
    )
    assert outcome(beside[0]) == alone
    _, refused = token_ids(
        smollm_engine, request(messages=question, max_tokens=4, logit_bias={10**7: 1.0})
    )
    assert isinstance(refused, EngineError) and refused.code == "invalid_parameter"
    assert "vocabulary has 49152 tokens (ids 0 to 49151)" in refused.message


@pytest.mark.model
def test_greedy_answers_in_a_batch_are_exactly_the_answers_alone(smollm_engine):
    requests = [
        request(messages=ask("Name the capital of France."), temperature=0, max_tokens=24),
        request(messages=ask("Name three colours."), temperature=0, max_tokens=40, stop=["3."]),
        request(prompt="def fibonacci(n):", temperature=0, max_tokens=48),
        request(
            messages=ask("Write a haiku about the sea, then explain it in two sentences."),
            temperature=0,
            max_tokens=64,
            stop=["\n\n"],
        ),
        request(prompt="The days of the week are Monday,", temperature=0, max_tokens=16),
    ]
    alone = [outcome(collect(smollm_engine, r)) for r in requests]
    widest_before = smollm_engine.stats["widest"]
    smollm_engine.stats["widest"] = 0
    batched = [outcome(r) for r in together(smollm_engine, requests)]
    assert batched == alone
    assert smollm_engine.stats["widest"] >= 4  # they really shared forward passes
    smollm_engine.stats["widest"] = max(widest_before, smollm_engine.stats["widest"])
    # The stop sequences cut where they should, and different lengths ended differently.
    assert {reason for _, reason, _ in alone} >= {"stop", "length"}


@pytest.mark.model
def test_a_seed_repeats_its_sample_alone_and_beside_others(smollm_engine):
    def seeded():
        return request(
            messages=ask("Tell me a short story about a fox."),
            temperature=1.0,
            top_p=0.95,
            seed=1234,
            max_tokens=32,
        )

    alone = outcome(collect(smollm_engine, seeded()))
    others = [
        request(
            messages=ask("Tell me a short story about a fox."),
            temperature=1.0,
            seed=99,
            max_tokens=32,
        ),
        request(prompt="Once upon a time", temperature=0.8, top_k=40, max_tokens=40),
        request(messages=ask("What is 2 + 2?"), temperature=0, max_tokens=20),
    ]
    results = together(smollm_engine, [seeded(), *others])
    assert outcome(results[0]) == alone
    assert outcome(results[1])[0] != alone[0]  # another seed samples another story


@pytest.mark.model
def test_a_request_joining_mid_batch_streams_before_the_others_finish(smollm_engine):
    long = request(prompt="1, 2, 3, 4, 5,", temperature=0, max_tokens=160)
    short = request(messages=ask("Say hello."), temperature=0, max_tokens=8)
    alone_long = outcome(collect(smollm_engine, long))
    assert alone_long[1] == "length"

    timeline: queue.Queue[tuple[str, str, float]] = queue.Queue()

    def follow(name: str, req: GenerationRequest) -> None:
        for event in smollm_engine.generate(req):
            if isinstance(event, TokenDelta):
                timeline.put((name, "token", time.monotonic()))
            elif isinstance(event, Finished | EngineError):
                timeline.put((name, "end", time.monotonic()))

    long_again = request(prompt="1, 2, 3, 4, 5,", temperature=0, max_tokens=160)
    first = threading.Thread(target=follow, args=("long", long_again))
    first.start()
    seen = 0
    while seen < 10:  # the long one is well under way
        name, kind, _ = timeline.get(timeout=60)
        seen += name == "long" and kind == "token"
    second = threading.Thread(target=follow, args=("short", short))
    second.start()
    second.join(60)
    first.join(120)
    events = []
    while not timeline.empty():
        events.append(timeline.get())
    order = [(name, kind) for name, kind, _ in events]
    short_first_token = order.index(("short", "token"))
    short_end, long_end = order.index(("short", "end")), order.index(("long", "end"))
    assert short_first_token < short_end < long_end
    # The long request kept streaming while the short one ran, not after it.
    assert ("long", "token") in order[short_first_token:short_end]


# -- a tiny random model (fast) ----------------------------------------------------------------


@pytest.fixture
def tiny_spec(tiny_model_dir):
    return ModelSpec(
        key=f"tiny@{uuid.uuid4().hex[:6]}",
        source_kind="local",
        source=str(tiny_model_dir),
        context_length=512,
    )


def test_a_cancel_frees_the_slot_for_the_next_request(tiny_spec, tiny_model_dir):
    engine = TransformersEngine(tiny_spec, cache_dir=tiny_model_dir, dtype="float32", max_batch=1)
    engine.wait_loaded(timeout=60)
    first = request(prompt="Once upon a time", temperature=0, max_tokens=400)
    second = request(prompt="Hello", temperature=0, max_tokens=5)
    first_stream = engine.generate(first)
    assert any(isinstance(e, TokenDelta) for e in first_stream)  # the one slot is taken

    second_events: queue.Queue[object] = queue.Queue()
    waiter = threading.Thread(
        target=lambda: [second_events.put(e) for e in engine.generate(second)]
    )
    waiter.start()
    # It waits for the slot: an idle beat (one per 0.2 s), and nothing but it. (Not three: on a
    # Zen 4 the tiny model writes the first request's 400 tokens in under 0.6 s.)
    wait_for(lambda: second_events.qsize() >= 1, what="the waiting request's idle beat")
    assert all(isinstance(e, Idle) for e in list(second_events.queue))
    engine.abort(first.request_id)
    ended = next(e for e in first_stream if isinstance(e, Finished))
    assert ended.finish_reason == "cancelled" and ended.completion_tokens < 400
    waiter.join(30)
    last = list(second_events.queue)[-1]
    assert isinstance(last, Finished) and last.completion_tokens > 0


def test_the_kv_budget_holds_back_what_does_not_fit_and_refuses_what_never_can(
    tiny_spec, tiny_model_dir
):
    engine = TransformersEngine(tiny_spec, cache_dir=tiny_model_dir, dtype="float32")
    engine.wait_loaded(timeout=60)
    # The cache grows in steps of 4 rows and 256 positions: this budget holds 4 requests of up to
    # 256 positions at once.
    engine.kv_budget_bytes = engine.decoder.cache_bytes(4, 256)
    huge = request(prompt="Hello", temperature=0, max_tokens=400)
    text, last = collect(engine, huge)
    assert isinstance(last, EngineError) and last.code == "context_length_exceeded"
    assert "lower max_tokens" in last.message
    five = [request(prompt=f"Story {i}", temperature=0, max_tokens=200) for i in range(5)]
    engine.stats["widest"] = 0
    results = together(engine, five)
    assert [outcome(r)[2] for r in results] == [200] * 5
    assert engine.stats["widest"] == 4  # the fifth waited for a row to free up


def test_the_incremental_detokenizer_adds_up_to_the_whole_decode(tiny_engine_tokenizer):
    tokenizer = tiny_engine_tokenizer
    text = "Grüße aus Köln 🦦, naïve café — 東京 ✓ done.\n  def f(x): return x**2"
    ids = tokenizer(text)["input_ids"]
    detokenizer = IncrementalDetokenizer(tokenizer)
    pieces = [detokenizer.push(i) for i in ids]
    assert "".join(pieces) + detokenizer.flush() == tokenizer.decode(ids)
    assert "\ufffd" not in "".join(pieces)


@pytest.fixture
def tiny_engine_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_other_architectures_share_the_scheduler_through_transformers_forward(
    tmp_path, model_cache_dir
):
    """A model LlamaDecoder does not cover (Mistral here) runs on EagerDecoder: same joins,
    streams and answers, one forward per row."""
    build_tiny_model(tmp_path, seed=0, cache_dir=model_cache_dir, architecture="mistral")
    spec = ModelSpec(
        key="tiny-mistral@1", source_kind="local", source=str(tmp_path), context_length=256
    )
    engine = TransformersEngine(spec, cache_dir=tmp_path, dtype="float32")
    engine.wait_loaded(timeout=60)
    assert engine.weights.startswith("transformers forward (architecture “mistral”)")
    requests = [request(prompt=f"Story number {i}", temperature=0, max_tokens=12) for i in range(3)]
    alone = [outcome(collect(engine, r)) for r in requests]
    assert [outcome(r) for r in together(engine, requests)] == alone
    assert engine.stats["widest"] >= 2


def test_bfloat16_weights_on_the_cpu_answer(tiny_spec, tiny_model_dir):
    engine = TransformersEngine(tiny_spec, cache_dir=tiny_model_dir, dtype="bfloat16")
    engine.wait_loaded(timeout=60)
    assert engine.weights == "llama decoder, bfloat16 weights"
    text, reason, tokens = outcome(
        collect(engine, request(prompt="Hello", temperature=0, max_tokens=6))
    )
    assert tokens >= 1


def test_one_request_failing_to_sample_ends_only_that_request(
    tiny_spec, tiny_model_dir, monkeypatch
):
    from apps.inference.engines import text as engine_text

    engine = TransformersEngine(tiny_spec, cache_dir=tiny_model_dir, dtype="float32")
    engine.wait_loaded(timeout=60)
    healthy = request(prompt="Story 1", temperature=0, max_tokens=30)
    alone = outcome(collect(engine, healthy))
    real_sample = engine_text.sample  # what every engine's Answer.choose samples with

    def broken_for_seed_13(logits, params, seen, rng, counts):
        if params.seed == 13 and len(seen) > 3:
            raise RuntimeError("probabilities contain NaN")
        return real_sample(logits, params, seen, rng, counts)

    monkeypatch.setattr(engine_text, "sample", broken_for_seed_13)
    doomed = request(prompt="Story 2", temperature=0.7, seed=13, max_tokens=30)
    results = together(engine, [request(prompt="Story 1", temperature=0, max_tokens=30), doomed])
    assert outcome(results[0]) == alone
    failed = results[1][1]
    assert (
        isinstance(failed, EngineError)
        and failed.code == "internal_error"
        and failed.code.retryable
    )


def test_a_caller_that_stops_at_the_final_event_leaves_nothing_behind(tiny_spec, tiny_model_dir):
    engine = TransformersEngine(tiny_spec, cache_dir=tiny_model_dir, dtype="float32")
    engine.wait_loaded(timeout=60)
    stream = engine.generate(request(prompt="Hello", temperature=0, max_tokens=5))
    for event in stream:  # as the worker reads it: it returns at the final event
        if isinstance(event, Finished):
            break
    stream.close()
    assert engine._aborted == set()  # not recorded as aborted after it had ended


def test_the_cache_shrinks_back_to_what_the_running_requests_need(tiny_spec, tiny_model_dir):
    engine = TransformersEngine(tiny_spec, cache_dir=tiny_model_dir, dtype="float32")
    engine.wait_loaded(timeout=60)
    decoder = engine.decoder
    decoder.reserve(32, 700)
    assert decoder.k.shape[1] == 32 and decoder.k.shape[3] == 768
    decoder.reserve(5, 300)  # most of it is no longer needed
    assert decoder.k.shape[1] == 8 and decoder.k.shape[3] == 512
    decoder.reserve(4, 300)  # close enough: kept as it is
    assert decoder.k.shape[1] == 8
    decoder.release()


def test_prompts_prefilled_together_get_the_logits_they_get_alone(tiny_spec, tiny_model_dir):
    import torch

    engine = TransformersEngine(tiny_spec, cache_dir=tiny_model_dir, dtype="float32")
    engine.wait_loaded(timeout=60)  # idle: its serving thread waits on an empty queue
    decoder = engine.decoder
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14], [15]]
    with torch.inference_mode():
        decoder.reserve(3, 16)
        alone = torch.stack([decoder.prefill(0, ids) for ids in prompts])
        together_ = decoder.prefill_many([0, 1, 2], prompts)
        # The cache rows hold each prompt's keys: a decode step from them agrees too.
        step = decoder.decode([1, 1, 1], [len(ids) for ids in prompts])
        decoder.reserve(1, 16)
        single = [decoder.prefill(0, ids + [1]) for ids in prompts]
    decoder.release()
    assert torch.allclose(together_, alone, atol=1e-5)
    assert torch.allclose(step, torch.stack(single), atol=1e-5)


def with_logprobs(engine, req: GenerationRequest) -> tuple[list[int], list[dict], object]:
    """The answer's tokens and their log-probability entries, and the last event (and the
    prompt's entries, on the first delta that has them, as ``events``' attribute)."""
    events = [e for e in engine.generate(req) if not isinstance(e, Idle)]
    deltas = [e for e in events if isinstance(e, TokenDelta)]
    prompts = [e.prompt_logprobs for e in deltas if e.prompt_logprobs is not None]
    entries = [entry for e in deltas for entry in e.logprobs]
    tokens = [t for e in deltas for t in e.token_ids]
    return tokens, entries, (events[-1], prompts)


@pytest.mark.model
def test_logprobs_list_the_model_s_own_likeliest_tokens_on_either_engine(smollm_engine):
    question = ask("Name three animals that live in the sea.")
    plain, _ = token_ids(smollm_engine, request(messages=question, temperature=0, max_tokens=24))
    tokens, entries, (last, _) = with_logprobs(
        smollm_engine, request(messages=question, temperature=0, max_tokens=24, logprobs=5)
    )
    assert isinstance(last, Finished)
    assert tokens == plain  # keeping them changes nothing
    assert len(entries) == len(tokens)
    for entry in entries:
        top = entry["top_logprobs"]
        values = [t["logprob"] for t in top]
        assert len(top) == 5 and len({tuple(t["bytes"]) for t in top}) == 5  # distinct
        assert values == sorted(values, reverse=True) and values[0] <= 0.0
        assert sum(math.exp(v) for v in values) <= 1.0 + 1e-6
        # Greedy: the chosen token is the likeliest, with the same log-probability.
        assert entry["token"] == top[0]["token"] and entry["logprob"] == pytest.approx(values[0])
        assert bytes(entry["bytes"]).decode(errors="replace") == entry["token"]
    # Sampled, the chosen token's entry is its own, wherever it ranks.
    tokens, entries, _ = with_logprobs(
        smollm_engine,
        request(messages=question, temperature=1.5, seed=7, max_tokens=24, logprobs=20),
    )
    for entry in entries:
        listed = {tuple(t["bytes"]): t["logprob"] for t in entry["top_logprobs"]}
        if tuple(entry["bytes"]) in listed:
            assert entry["logprob"] == pytest.approx(listed[tuple(entry["bytes"])])
        else:
            assert entry["logprob"] <= min(listed.values()) + 1e-9
    # A prompt scored at every position: one entry per prompt token, the first with none.
    scored = request(
        prompt="The capital of France is",
        temperature=0,
        max_tokens=4,
        logprobs=2,
        prompt_logprobs=True,
    )
    prompt_ids = smollm_engine.tokenizer("The capital of France is")["input_ids"]
    tokens, _, (_, prompts) = with_logprobs(smollm_engine, scored)
    (prompt_entries,) = prompts
    assert len(prompt_entries) == len(prompt_ids)
    assert prompt_entries[0]["logprob"] is None and prompt_entries[0]["token"] == "The"
    assert all(e["logprob"] <= 0.0 and len(e["top_logprobs"]) == 2 for e in prompt_entries[1:])
    # " France" after "The capital of" is likelier than the average word.
    france = [e for e in prompt_entries if e["token"] == " France"]
    assert france and france[0]["logprob"] > -12
    alone, _ = token_ids(
        smollm_engine, request(prompt="The capital of France is", temperature=0, max_tokens=4)
    )
    assert tokens == alone


PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer"},
        "city": {"type": "string", "maxLength": 40},
    },
    "required": ["name", "age", "city"],
    "additionalProperties": False,
}


@pytest.mark.model
def test_a_grammar_holds_its_answer_to_the_schema_and_leaves_its_neighbours_on_either_engine(
    smollm_engine,
):
    grammar = json_schema_grammar(PERSON, param="schema")
    question = ask("Ada Lovelace, 36, lived in London. Describe her as JSON.")

    def constrained(**params) -> GenerationRequest:
        return request(messages=question, grammar=grammar, **{"max_tokens": 60, **params})

    free = request(messages=question, temperature=0, max_tokens=30)
    alone = outcome(collect(smollm_engine, free))
    constrained_alone = outcome(collect(smollm_engine, constrained(temperature=0)))
    greedy, sampled, beside = together(
        smollm_engine,
        [
            constrained(temperature=0),
            constrained(temperature=1.0, seed=3),
            request(messages=question, temperature=0, max_tokens=30),
        ],
    )
    for result in (greedy, sampled):
        text, reason, _ = outcome(result)
        assert reason == "stop"  # the grammar's end is the answer's end
        value = json.loads(text)
        assert list(value) == ["name", "age", "city"] and isinstance(value["age"], int)
    # Batched together, each got its solo answer: the grammar masked its own logits only.
    assert outcome(beside) == alone and outcome(greedy) == constrained_alone
    # Cut by max_tokens, the answer is what it is: "length", and not claimed valid.
    text, reason, tokens = outcome(collect(smollm_engine, constrained(temperature=0, max_tokens=4)))
    assert reason == "length" and tokens == 4
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    # A stop sequence still ends it where it appears.
    text, reason, _ = outcome(collect(smollm_engine, constrained(temperature=0, stop=['"age"'])))
    assert reason == "stop" and text.startswith('{"name": "') and "age" not in text
