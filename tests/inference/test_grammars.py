"""Grammars from what a request asks for (``apps/inference/grammars.py``) and the constraint that
applies them (``engines/constraint.py``), on the packaged model's tokenizer: what llguidance
cannot do is refused by name, and a constraint only ever allows text its grammar accepts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from apps.core.errors import ServiceError
from apps.inference.engines.constraint import Constraint
from apps.inference.grammars import json_object_grammar, json_schema_grammar
from tests.conftest import smollm_tokenizer_from

PARAM = "response_format.json_schema.schema"


def refusal(schema) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        json_schema_grammar(schema, param=PARAM)
    return caught.value


def test_an_unsupported_keyword_is_refused_by_name_where_it_is():
    error = refusal({"type": "array", "items": {"type": "string"}, "uniqueItems": True})
    assert error.param == f"{PARAM}.uniqueItems"
    assert error.message.startswith(
        f'The JSON Schema keyword "uniqueItems" is not supported in {PARAM}'
    )
    # A property that happens to be called "not" is a name, not the keyword.
    nested = {
        "type": "object",
        "properties": {"not": {"type": "object", "properties": {"a": {"not": {}}}}},
    }
    assert refusal(nested).param == f"{PARAM}.properties.not.properties.a.not"


def test_a_schema_that_is_not_one_is_refused_in_words():
    assert refusal("a string").message == f"{PARAM} must be a JSON Schema object."
    error = refusal({"type": "object", "properties": {"a": {"type": "strin"}}})
    assert error.param == PARAM and "strin" in error.message
    assert "Error(" not in error.message and "Traceback" not in error.message


@pytest.fixture(scope="module")
def tokenizer(model_cache_dir):
    return smollm_tokenizer_from(model_cache_dir)


def end_ids(tokenizer) -> set[int]:
    return {tokenizer.eos_token_id}


def constrain(grammar: str, tokenizer) -> Constraint:
    return Constraint(grammar, tokenizer, end_ids=end_ids(tokenizer), vocab_size=len(tokenizer))


def walk(constraint: Constraint, tokenizer, rng: np.random.Generator) -> str:
    """Random tokens among those the constraint allows, until its grammar is complete."""
    ids: list[int] = []
    while not constraint.complete:
        allowed = constraint.allow(rng.normal(size=len(tokenizer)).astype(np.float32))
        token = int(np.argmax(allowed))
        assert np.isfinite(allowed[token]) and token not in end_ids(tokenizer)
        constraint.advance(token)
        ids.append(token)
        assert len(ids) < 400
    return tokenizer.decode(ids)


# Every string bounded, so that a random walk ends.
BOUNDED = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 6},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "colour": {"enum": ["red", "green"]},
        "ok": {"type": "boolean"},
    },
    "required": ["name", "age", "colour", "ok"],
    "additionalProperties": False,
}


def test_a_constraint_allows_only_what_its_schema_accepts(tokenizer):
    for seed in range(5):
        rng = np.random.default_rng(seed)
        text = walk(constrain(json_schema_grammar(BOUNDED, param=PARAM), tokenizer), tokenizer, rng)
        value = json.loads(text)  # even random choices make valid JSON, in the compact form
        assert list(value) == ["name", "age", "colour", "ok"] and text.startswith('{"name": "')
        assert (
            len(value["name"]) <= 6
            and 0 <= value["age"] <= 120
            and value["colour"] in {"red", "green"}
        )
    # Any object: the first token opens one.
    anything = constrain(json_object_grammar(), tokenizer)
    allowed = anything.allow(np.zeros(len(tokenizer), dtype=np.float32))
    firsts = {tokenizer.decode([int(i)]) for i in np.flatnonzero(np.isfinite(allowed))}
    assert firsts and all(text.startswith("{") for text in firsts)
