"""Checking an eval set's JSONL before anything is stored: one item per line, each line checked,
every bad line refused by its number.

An item is a JSON object with:

- ``input``: the prompt, a non-empty string, or chat messages (a non-empty list of
  ``{"role": "system" | "user" | "assistant", "content": "..."}`` ending with a user turn);
- ``ideal``: an acceptable answer, or a list of them (non-empty strings); required unless the
  item has a ``label`` or a ``schema`` to be graded by;
- ``label`` (optional): the label a classifying answer should give;
- ``schema`` (optional): a JSON schema (draft 2020-12) a JSON answer must be valid against;
- ``metadata`` (optional): any JSON object, kept with the item.

Nothing else: an unknown key is refused by name, so that a typo does not quietly drop a field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from django.utils.translation import gettext as _
from jsonschema import Draft202012Validator, SchemaError

from apps.core.errors import quoted

MAX_ITEMS = 5_000
MAX_BYTES = 10 << 20
MAX_REPORTED = 50  # bad lines listed at most; the rest are counted
KEYS = {"input", "ideal", "label", "schema", "metadata"}
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class LineError:
    line: int
    message: str


@dataclass
class EvalSetInvalid(Exception):
    """The file was refused; ``errors`` says on which lines and why."""

    summary: str
    errors: list[LineError] = field(default_factory=list)

    def __str__(self) -> str:
        return self.summary


@dataclass(frozen=True)
class ParsedItem:
    line: int
    input: str | list[dict[str, str]]
    ideal: list[str]
    label: str = ""
    schema: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def parse_items(data: bytes) -> list[ParsedItem]:
    """Every line of ``data`` checked; EvalSetInvalid, listing each bad line, if any is bad."""
    if len(data) > MAX_BYTES:
        raise EvalSetInvalid(
            _("The file has %(size)s bytes; the limit is %(limit)s.")
            % {"size": len(data), "limit": MAX_BYTES}
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise EvalSetInvalid(
            _("The file is not UTF-8 text."), [LineError(line, _("bytes that are not UTF-8"))]
        ) from None
    lines = text.split("\n")
    if lines and not lines[-1].strip():
        lines.pop()  # the newline that ends the last line
    items: list[ParsedItem] = []
    errors: list[LineError] = []
    for number, content in enumerate(lines, start=1):
        try:
            items.append(_item(number, content))
        except ValueError as problem:
            errors.append(LineError(number, str(problem)))
    if errors:
        shown = errors[:MAX_REPORTED]
        raise EvalSetInvalid(
            _("%(count)s lines are not valid items; fix them and upload again.")
            % {"count": len(errors)},
            shown,
        )
    if not items:
        raise EvalSetInvalid(_("The file has no items."))
    if len(items) > MAX_ITEMS:
        raise EvalSetInvalid(
            _("The file has %(count)s items; the limit is %(limit)s.")
            % {"count": len(items), "limit": MAX_ITEMS}
        )
    return items


def _item(line: int, content: str) -> ParsedItem:
    if not content.strip():
        raise ValueError(_("an empty line; each line must hold one JSON object"))
    try:
        row = json.loads(content)
    except json.JSONDecodeError as exc:
        raise ValueError(
            _("not valid JSON (%(reason)s at column %(column)s)")
            % {"reason": exc.msg, "column": exc.colno}
        ) from None
    if not isinstance(row, dict):
        raise ValueError(_("not a JSON object"))
    unknown = sorted(set(row) - KEYS)
    if unknown:
        raise ValueError(
            _("unknown keys %(keys)s; an item has input, ideal, label, schema and metadata")
            % {"keys": ", ".join(quoted(k) for k in unknown)}
        )
    if "input" not in row:
        raise ValueError(_('an item needs "input"'))
    label = _label(row.get("label"))
    schema = _schema(row.get("schema"))
    ideal = check_ideal(row.get("ideal"), required=not (label or schema is not None))
    metadata = row.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ValueError(_('"metadata" must be a JSON object'))
    return ParsedItem(line, check_input(row["input"]), ideal, label, schema, metadata)


def check_input(value: Any) -> str | list[dict[str, str]]:
    if isinstance(value, str):
        if not value.strip():
            raise ValueError(_('"input" must not be empty'))
        return value
    if not isinstance(value, list) or not value:
        raise ValueError(_('"input" must be a string or a non-empty list of messages'))
    for index, message in enumerate(value):
        where = f"input[{index}]"
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise ValueError(
                _('%(where)s must be an object with exactly "role" and "content"')
                % {"where": where}
            )
        if message["role"] not in ROLES:
            raise ValueError(
                _("%(where)s.role must be one of %(roles)s")
                % {"where": where, "roles": ", ".join(ROLES)}
            )
        if not isinstance(message["content"], str) or not message["content"].strip():
            raise ValueError(_("%(where)s.content must be non-empty text") % {"where": where})
    if value[-1]["role"] != "user":
        raise ValueError(_("the last message of the input must be the user's"))
    return [{"role": m["role"], "content": m["content"]} for m in value]


def check_ideal(value: Any, *, required: bool) -> list[str]:
    if value is None:
        if required:
            raise ValueError(_('an item needs "ideal" (or a "label" or "schema" to grade by)'))
        return []
    ideals = [value] if isinstance(value, str) else value
    if (
        not isinstance(ideals, list)
        or not ideals
        or not all(isinstance(i, str) and i.strip() for i in ideals)
    ):
        raise ValueError(_('"ideal" must be a non-empty string or a list of them'))
    return list(ideals)


def _label(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
        raise ValueError(_('"label" must be non-empty text or a whole number'))
    if len(str(value)) > 200:
        raise ValueError(_('"label" must be at most %(limit)s characters') % {"limit": 200})
    return str(value).strip()


def _schema(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(_('"schema" must be a JSON schema object'))
    try:
        Draft202012Validator.check_schema(value)
    except SchemaError as exc:
        raise ValueError(
            _('"schema" is not a valid JSON schema: %(reason)s') % {"reason": exc.message}
        ) from None
    return value
