"""Tool calls in the documented format (``apps/inference/tools.py``): what counts as a call, the
grammar that makes a required call valid, and a stream that holds back what may become one."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
from django.utils import timezone

from apps.api.serving import Completion
from apps.core.errors import ServiceError
from apps.inference.engines.constraint import Constraint
from apps.inference.models import Generation
from apps.inference.streaming import Delta
from apps.inference.tools import Function, call_block, call_grammar, may_become_call, parse_calls
from tests.conftest import smollm_tokenizer_from

WEATHER = Function(
    "get_weather",
    "The weather in a city now.",
    {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 12},
            "unit": {"enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
)
TIME = Function("get_time", "", {"type": "object", "properties": {}, "additionalProperties": False})


def test_an_answer_is_a_call_only_when_it_is_nothing_but_calls_to_offered_functions():
    names = {"get_weather", "get_time"}
    one = call_block("get_weather", '{"city": "Paris", "unit": "celsius"}')
    assert parse_calls(f"  {one}\n", names) == [
        ("get_weather", '{"city": "Paris", "unit": "celsius"}')
    ]
    two = f"{one}\n{call_block('get_time', '{}')}"
    assert [name for name, _ in parse_calls(two, names)] == ["get_weather", "get_time"]
    # Arguments written as a JSON string are read as the object they hold.
    assert parse_calls('<tool_call>{"name": "get_time", "arguments": "{}"}</tool_call>', names)
    for text in (
        "The weather is fine.",
        f"Sure: {one}",  # text first: an answer, not a call
        f"{one} and then some words",
        call_block("delete_everything", "{}"),  # not offered
        '<tool_call>{"name": "get_time", "arguments": [1]}</tool_call>',
        '<tool_call>{"name": "get_time", "arguments": {"a": </tool_call>',
        "<tool_call> unfinished",
    ):
        assert parse_calls(text, names) is None, text
    assert may_become_call("") and may_become_call(" <tool") and may_become_call(one)
    assert not may_become_call("<b>bold</b>") and not may_become_call("Hello")


def walk(constraint: Constraint, tokenizer, rng) -> str:
    ids: list[int] = []
    while not constraint.complete and len(ids) < 300:
        allowed = constraint.allow(rng.normal(size=len(tokenizer)).astype(np.float32))
        allowed[tokenizer.eos_token_id] = -np.inf  # walk until the grammar itself ends
        token = int(np.argmax(allowed))
        constraint.advance(token)
        ids.append(token)
    return tokenizer.decode(ids)


@pytest.mark.model
def test_a_required_call_is_always_a_valid_call(model_cache_dir):
    tokenizer = smollm_tokenizer_from(model_cache_dir)
    end = {tokenizer.eos_token_id}
    for functions, seed in (([WEATHER], 0), ([WEATHER, TIME], 1), ([WEATHER, TIME], 2)):
        grammar = call_grammar(functions, parallel=False)
        constraint = Constraint(grammar, tokenizer, end_ids=end, vocab_size=len(tokenizer))
        text = walk(constraint, tokenizer, np.random.default_rng(seed))
        (call,) = parse_calls(text, {f.name for f in functions})
        if call[0] == "get_weather":
            arguments = json.loads(call[1])
            assert set(arguments) == {"city", "unit"} and len(arguments["city"]) <= 12


def test_a_parameter_schema_that_cannot_be_followed_is_refused_by_name():
    odd = Function("f", "", {"type": "array", "uniqueItems": True})
    with pytest.raises(ServiceError) as caught:
        call_grammar([TIME, odd], parallel=True)
    assert caught.value.param == "tools.1.function.parameters.uniqueItems"


def stream(pieces: list[str], reason: str = "stop") -> list[dict]:
    generation = Generation(id=uuid.uuid4(), params={}, created_at=timezone.now())
    completion = Completion([generation], "m", chat=True, tools={"get_weather"})
    gid = str(generation.pk)
    choices, offset = [], 0
    for piece in pieces:
        choices += completion.delta_choices(Delta(gid, offset, piece))
        offset += len(piece)
    return choices + completion.final_choices(gid, reason)


def test_a_stream_holds_back_what_may_become_a_call_and_sends_the_call_whole():
    call = call_block("get_weather", '{"city": "Oslo", "unit": "celsius"}')
    choices = stream([call[:5], call[5:20], call[20:]])
    assert len(choices) == 2
    (sent,) = choices[0]["delta"]["tool_calls"]
    assert sent["index"] == 0 and sent["id"].startswith("call_") and sent["type"] == "function"
    assert sent["function"] == {
        "name": "get_weather",
        "arguments": '{"city": "Oslo", "unit": "celsius"}',
    }
    assert choices[1]["finish_reason"] == "tool_calls"
    # Text goes out as soon as it cannot be a call; a call cut by max_tokens is text.
    text = stream(["Hello", ", world"])
    assert [c["delta"].get("content") for c in text] == ["Hello", ", world", None]
    cut = stream([call[:30]], reason="length")
    assert cut[0]["delta"]["content"] == call[:30] and cut[1]["finish_reason"] == "length"
