"""Grammars that constrain an answer, written for llguidance (the kept library that both engines
decode through: ``engines/constraint.py``), from what an API request asks for.

A grammar is checked here, where the request is made, so an unsupported JSON Schema keyword is a
400 naming it before anything is queued; the engine compiles it again against the model's own
vocabulary. JSON is written compactly but readably (``", "`` and ``": "``, no other whitespace):
free whitespace lets a small model pad an answer with blank lines until ``max_tokens``.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import llguidance

from apps.core.errors import ErrorCode, ServiceError

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

# What the JSON compiler is told unless the schema's own "x-guidance" says otherwise.
JSON_OPTIONS: JsonCompileOptions = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
}

_UNIMPLEMENTED = re.compile(r"Unimplemented keys: \[(.*?)\]")


def json_object_grammar() -> str:
    """Any JSON object (``response_format: {"type": "json_object"}``)."""
    return json_schema_grammar({"type": "object"}, param="response_format")


def json_schema_grammar(schema: Any, *, param: str) -> str:
    """A grammar for JSON that validates against ``schema``. Raises ServiceError (400) naming
    the first keyword llguidance does not implement (``param`` is where the schema sits in the
    request; the error's param points at the keyword inside it), or what else is wrong."""
    if not isinstance(schema, dict):
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER, f"{param} must be a JSON Schema object.", param=param
        )
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=JSON_OPTIONS)
        failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    except (ValueError, TypeError) as exc:  # the schema is not even JSON
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER, f"{param} could not be read: {exc}", param=param
        ) from None
    if not failed:
        return grammar
    message = messages[0] if messages else "the schema is not supported"
    unimplemented = _UNIMPLEMENTED.search(message)
    if unimplemented:
        keywords = [json.loads(k) for k in re.findall(r'"(?:[^"\\]|\\.)*"', unimplemented.group(1))]
        where = _path_to(schema, set(keywords)) or []
        keyword = where[-1] if where else keywords[0]
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER,
            f'The JSON Schema keyword "{keyword}" is not supported in {param}; remove it '
            "(supported: types, properties, required, additionalProperties, items, enum, const, "
            "anyOf, oneOf, allOf, $ref and $defs, string lengths, pattern and format, number "
            "bounds, array lengths).",
            param=".".join([param, *where]),
        )
    raise ServiceError(
        ErrorCode.INVALID_PARAMETER,
        f"{param} cannot be used: {_plain(message)}",
        param=param,
    )


_NAMED = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")


def _path_to(schema: Any, keywords: set[str], path: list[str] | None = None) -> list[str] | None:
    """The path to the first of ``keywords`` used as a keyword in ``schema`` (not as a property's
    name), looking at a schema's own keys before its subschemas; None when it is not found."""
    path = path or []
    if not isinstance(schema, dict):
        return None
    for key in schema:
        if key in keywords:
            return [*path, key]
    for key, value in schema.items():
        children: list[tuple[list[str], Any]] = []
        if key in _NAMED and isinstance(value, dict):
            children = [([key, name], sub) for name, sub in value.items()]
        elif key in _LISTS and isinstance(value, list):
            children = [([key, str(i)], sub) for i, sub in enumerate(value)]
        elif isinstance(value, dict):
            children = [([key], value)]
        for where, sub in children:
            found = _path_to(sub, keywords, [*path, *where])
            if found:
                return found
    return None


def _plain(message: str) -> str:
    """llguidance's message without its own prefixes, ending in a full stop."""
    text = message.strip().removeprefix("Error: ")
    return text if text.endswith(".") else text + "."
