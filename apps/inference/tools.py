"""Tool calls in the prompt and out of the answer, in one documented format for chat templates
that have none of their own (SmolLM2's, the packaged model's, has none).

The offered functions go into the system message, after its own text::

    You may call functions. To call one, answer with nothing but
    <tool_call>
    {"name": "<function name>", "arguments": {<its arguments>}}
    </tool_call>
    (one block per call). The functions, as JSON Schema:
    {"name": "get_weather", "description": "...", "parameters": {...}}

An assistant turn that called functions is written back the same way (its text, then one block
per call), and a ``tool`` message as a user turn holding
``<tool_response>{"name": ..., "content": ...}</tool_response>`` (content that is JSON as the value
it holds), the name found from its ``tool_call_id``. An answer is a call when, leading whitespace aside, it is nothing but such
blocks, each naming an offered function with an object of arguments; anything else is text.

Where the call is required (``tool_choice`` ``"required"`` or a named function) the answer is
decoded under ``call_grammar``: only the blocks, their JSON valid against the functions'
parameter schemas. Under ``"auto"`` the model writes freely and a call is recognised afterwards.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import llguidance

from apps.core.errors import ErrorCode, ServiceError

from .grammars import JSON_OPTIONS, json_schema_grammar

OPEN = "<tool_call>"
CLOSE = "</tool_call>"
INSTRUCTIONS = (
    "You may call functions. To call one, answer with nothing but\n"
    f'{OPEN}\n{{"name": "<function name>", "arguments": {{<its arguments>}}}}\n{CLOSE}\n'
    "(one block per call). The functions, as JSON Schema:"
)
ANY_OBJECT: dict[str, Any] = {"type": "object"}


@dataclass(frozen=True)
class Function:
    """One offered function: its name, what it does and its parameters' JSON Schema."""

    name: str
    description: str = ""
    parameters: dict[str, Any] | None = None

    def described(self) -> str:
        entry: dict[str, Any] = {"name": self.name}
        if self.description:
            entry["description"] = self.description
        entry["parameters"] = self.parameters or ANY_OBJECT
        return json.dumps(entry, ensure_ascii=False)


def call_block(name: str, arguments: str) -> str:
    """One call as the model writes it; ``arguments`` is the JSON text of an object."""
    try:
        value = json.loads(arguments)
    except ValueError:
        value = arguments  # written back as the string it was
    body = json.dumps({"name": name, "arguments": value}, ensure_ascii=False)
    return f"{OPEN}\n{body}\n{CLOSE}"


def with_tools(system: str, functions: list[Function]) -> str:
    """A system message's text with the offered functions after it."""
    listed = "\n".join(function.described() for function in functions)
    return f"{system}\n\n{INSTRUCTIONS}\n{listed}".lstrip()


def tool_response(name: str, content: str) -> str:
    """A function's result as the model reads it: JSON content as the value it holds."""
    try:
        value: Any = json.loads(content)
    except ValueError:
        value = content
    body = json.dumps({"name": name, "content": value}, ensure_ascii=False)
    return f"<tool_response>\n{body}\n</tool_response>"


def call_grammar(functions: list[Function], *, parallel: bool) -> str:
    """The grammar of an answer that is one call (``parallel``: one to as many as there are
    functions) to one of ``functions``, its arguments valid against the function's parameters. Raises ServiceError
    naming a parameter schema's keyword that cannot be followed (``tools.N.function.parameters``)."""
    for index, function in enumerate(functions):
        if function.parameters is not None:
            json_schema_grammar(function.parameters, param=f"tools.{index}.function.parameters")
    schema = {
        "anyOf": [
            {
                "type": "object",
                "properties": {
                    "name": {"const": function.name},
                    "arguments": function.parameters or ANY_OBJECT,
                },
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
            for function in functions
        ],
        "x-guidance": JSON_OPTIONS,
    }
    # Up to one call per function with ``parallel``: left free to add calls, a small model
    # repeats the same one until max_tokens.
    calls = "call"
    for _ in range(len(functions) - 1 if parallel else 0):
        calls = f'call ("\\n" {calls})?'
    lark = (
        f'start: {calls}\ncall: "{OPEN}\\n" body "\\n{CLOSE}"\nbody: %json {json.dumps(schema)}\n'
    )
    grammar = llguidance.LLMatcher.grammar_from_lark(lark)
    failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    if failed:  # the parameter schemas passed on their own: a bug here, said in words
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER,
            "The tools' parameter schemas cannot be combined into one call grammar"
            + (f": {messages[0]}" if messages else "."),
            param="tools",
        )
    return grammar


def parse_calls(text: str, names: set[str]) -> list[tuple[str, str]] | None:
    """The calls ``text`` makes, as (name, arguments JSON) pairs, or None when it is text: it
    must be nothing but call blocks, each naming one of ``names`` with an object of arguments."""
    rest = text.strip()
    if not rest.startswith(OPEN):
        return None
    calls = []
    while rest:
        if not rest.startswith(OPEN) or CLOSE not in rest:
            return None
        body, _, rest = rest[len(OPEN) :].partition(CLOSE)
        rest = rest.strip()
        try:
            call = json.loads(body)
        except ValueError:
            return None
        if not isinstance(call, dict) or call.get("name") not in names:
            return None
        arguments = call.get("arguments", {})
        if isinstance(arguments, str):  # some models write the arguments as a JSON string
            try:
                arguments = json.loads(arguments)
            except ValueError:
                return None
        if not isinstance(arguments, dict):
            return None
        calls.append((call["name"], json.dumps(arguments, ensure_ascii=False)))
    return calls


def may_become_call(text: str) -> bool:
    """Whether an answer that begins with ``text`` may still turn out to be a call (a stream
    holds such text back until it knows)."""
    start = text.lstrip()
    return OPEN.startswith(start) or start.startswith(OPEN)


def call_id(generation_id: object, index: int) -> str:
    """The id of the ``index``-th call the answer of generation ``generation_id`` makes: the
    same wherever the answer is shown or sent back (chat completions, the Responses API)."""
    return f"call_{str(generation_id).replace('-', '')[:16]}{index}"


def answer_calls(generation_id: object, text: str, names: set[str]) -> list[dict[str, Any]] | None:
    """The calls the answer ``text`` of generation ``generation_id`` makes, in the chat
    completions' shape (``{"id", "type": "function", "function": {"name", "arguments"}}``),
    or None when it is text or no functions (``names``) were offered."""
    found = parse_calls(text, names) if names else None
    if not found:
        return None
    return [
        {
            "id": call_id(generation_id, i),
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }
        for i, (name, arguments) in enumerate(found)
    ]
