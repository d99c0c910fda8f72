"""Checking an uploaded JSONL file before anything is stored or trained.

Two row shapes are accepted, one per file:
- chat: ``{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}``, ending
  with an assistant message (the assistant turns are what the model learns);
- prompt and completion: ``{"prompt": "...", "completion": "..."}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

CHAT = "chat"
PROMPT_COMPLETION = "prompt_completion"
ROLES = ("system", "user", "assistant")
MAX_REPORTED_ERRORS = 50


@dataclass
class RowError:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class DatasetInvalid(Exception):
    """The file was refused; ``errors`` says where and why (at most MAX_REPORTED_ERRORS)."""

    def __init__(self, summary: str, errors: list[RowError] | None = None) -> None:
        super().__init__(summary)
        self.summary = summary
        self.errors = errors or []

    def __str__(self) -> str:
        details = "; ".join(str(e) for e in self.errors[:5])
        more = f" (and {len(self.errors) - 5} more)" if len(self.errors) > 5 else ""
        return f"{self.summary}{': ' + details + more if details else ''}"


@dataclass
class ParsedDataset:
    format: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # the file line of each row


def parse_dataset(data: bytes) -> ParsedDataset:
    """Every row of ``data`` checked; raise DatasetInvalid listing each bad row's line number."""
    if not data.strip():
        raise DatasetInvalid("The file is empty.")
    if len(data) > settings.FINETUNE_MAX_UPLOAD_BYTES:
        raise DatasetInvalid(
            f"The file has {len(data)} bytes; the limit is {settings.FINETUNE_MAX_UPLOAD_BYTES}."
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DatasetInvalid(
            "The file is not UTF-8 text.", [RowError(line, "bytes that are not UTF-8")]
        ) from None
    errors: list[RowError] = []
    parsed = ParsedDataset(format="")
    lines = text.split("\n")
    if lines and lines[-1].strip() == "":
        lines.pop()  # the newline that ends the last row
    for number, content in enumerate(lines, start=1):
        problem = _check_line(content, parsed)
        if problem:
            errors.append(RowError(number, problem))
        else:
            parsed.lines.append(number)
        if len(errors) >= MAX_REPORTED_ERRORS:
            break
    if errors:
        count = f"{len(errors)}{'+' if len(errors) >= MAX_REPORTED_ERRORS else ''}"
        raise DatasetInvalid(f"{count} rows are not valid; fix them and upload again", errors)
    if len(parsed.rows) > settings.FINETUNE_MAX_ROWS:
        raise DatasetInvalid(
            f"The file has {len(parsed.rows)} rows; the limit is {settings.FINETUNE_MAX_ROWS}."
        )
    return parsed


def _check_line(line: str, parsed: ParsedDataset) -> str | None:
    if not line.strip():
        return "an empty line; each line must hold one JSON object"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        return f"not valid JSON ({exc.msg} at column {exc.colno})"
    if not isinstance(row, dict):
        return "not a JSON object"
    kind = CHAT if "messages" in row else PROMPT_COMPLETION if "prompt" in row else None
    if kind is None:
        return 'a row needs "messages" (chat) or "prompt" and "completion"'
    if parsed.format and kind != parsed.format:
        return f"a {kind} row in a {parsed.format} file; use one shape per file"
    problem = _check_chat(row) if kind == CHAT else _check_prompt_completion(row)
    if problem is None:
        parsed.format = parsed.format or kind
        parsed.rows.append(row)
    return problem


def _check_chat(row: dict[str, Any]) -> str | None:
    if set(row) != {"messages"}:
        return f"unknown keys {sorted(set(row) - {'messages'})}; a chat row has only messages"
    messages = row["messages"]
    if not isinstance(messages, list) or not messages:
        return '"messages" must be a non-empty list'
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            return f'{where} must be an object with exactly "role" and "content"'
        if message["role"] not in ROLES:
            return f"{where}.role must be one of {', '.join(ROLES)}"
        if message["role"] == "system" and index != 0:
            return f"{where}: a system message may only come first"
        if not isinstance(message["content"], str) or not message["content"].strip():
            return f"{where}.content must be non-empty text"
    if messages[-1]["role"] != "assistant":
        return "the last message must be the assistant's (it is what the model learns)"
    return None


def _check_prompt_completion(row: dict[str, Any]) -> str | None:
    if set(row) != {"prompt", "completion"}:
        return 'a prompt row has exactly "prompt" and "completion"'
    for key in ("prompt", "completion"):
        if not isinstance(row[key], str) or not row[key].strip():
            return f'"{key}" must be non-empty text'
    return None


def read_rows(path: str) -> list[dict[str, Any]]:
    """The rows of a stored (already validated) dataset file."""
    with open(path, "rb") as handle:
        return parse_dataset(handle.read()).rows
