"""Checking an uploaded file before anything is stored or trained.

Three row shapes are accepted, one per file:
- chat (JSONL): ``{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}``,
  ending with an assistant message (the assistant turns are what the model learns);
- prompt and completion (JSONL): ``{"prompt": "...", "completion": "..."}``;
- classification: ``{"text": "...", "label": "..."}`` per JSONL line, or a CSV file whose header
  has the columns ``text`` and ``label``.

And how the checked rows are split for training, validation and testing (``holdout_split``,
``stratified_split``).
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.utils.translation import gettext as _

from apps.core.errors import quoted

CHAT = "chat"
PROMPT_COMPLETION = "prompt_completion"
CLASSIFICATION = "classification"
ROLES = ("system", "user", "assistant")
MAX_REPORTED_ERRORS = 50
MAX_LABELS = 100
MAX_LABEL_CHARS = 100


@dataclass
class RowError:
    line: int
    message: str

    def __str__(self) -> str:
        return _("line %(line)s: %(message)s") % {"line": self.line, "message": self.message}


class DatasetInvalid(Exception):
    """The file was refused; ``errors`` says where and why (at most MAX_REPORTED_ERRORS)."""

    def __init__(self, summary: str, errors: list[RowError] | None = None) -> None:
        super().__init__(summary)
        self.summary = summary
        self.errors = errors or []

    def __str__(self) -> str:
        details = "; ".join(str(e) for e in self.errors[:5])
        more = (
            _(" (and %(count)s more)") % {"count": len(self.errors) - 5}
            if len(self.errors) > 5
            else ""
        )
        return f"{self.summary}{': ' + details + more if details else ''}"


@dataclass
class ParsedDataset:
    format: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # the file line of each row
    is_csv: bool = False

    @property
    def label_counts(self) -> dict[str, int]:
        """Rows per label, most frequent first (classification only)."""
        return dict(Counter(row["label"] for row in self.rows).most_common())


def parse_dataset(data: bytes) -> ParsedDataset:
    """Every row of ``data`` checked; raise DatasetInvalid listing each bad row's line number."""
    if not data.strip():
        raise DatasetInvalid(_("The file is empty."))
    if len(data) > settings.FINETUNE_MAX_UPLOAD_BYTES:
        raise DatasetInvalid(
            _("The file has %(size)s bytes; the limit is %(limit)s.")
            % {"size": len(data), "limit": settings.FINETUNE_MAX_UPLOAD_BYTES}
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DatasetInvalid(
            _("The file is not UTF-8 text."), [RowError(line, _("bytes that are not UTF-8"))]
        ) from None
    header = text.lstrip().split("\n", 1)[0].lower()
    looks_csv = not header.startswith("{") and "text" in header and "label" in header
    parsed = _parse_csv(text) if looks_csv else _parse_jsonl(text)
    if len(parsed.rows) > settings.FINETUNE_MAX_ROWS:
        raise DatasetInvalid(
            _("The file has %(count)s rows; the limit is %(limit)s.")
            % {"count": len(parsed.rows), "limit": settings.FINETUNE_MAX_ROWS}
        )
    if parsed.format == CLASSIFICATION:
        labels = parsed.label_counts
        if len(labels) < 2:
            raise DatasetInvalid(
                _("Every row has the label %(label)s; a classifier needs at least two labels.")
                % {"label": quoted(next(iter(labels)))}
            )
        if len(labels) > MAX_LABELS:
            raise DatasetInvalid(
                _("The file has %(count)s labels; the limit is %(limit)s.")
                % {"count": len(labels), "limit": MAX_LABELS}
            )
    return parsed


def _refuse(errors: list[RowError]) -> DatasetInvalid:
    count = f"{len(errors)}{'+' if len(errors) >= MAX_REPORTED_ERRORS else ''}"
    return DatasetInvalid(
        _("%(count)s rows are not valid; fix them and upload again") % {"count": count}, errors
    )


def _parse_jsonl(text: str) -> ParsedDataset:
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
        raise _refuse(errors)
    return parsed


def _parse_csv(text: str) -> ParsedDataset:
    """A CSV file of classification rows: a header with ``text`` and ``label``, then one row each."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip().lower() for name in next(reader)]
    except (StopIteration, csv.Error):
        raise DatasetInvalid(_("The file is neither JSONL nor a CSV file with a header.")) from None
    if sorted(header) != ["label", "text"]:
        raise DatasetInvalid(
            _(
                "A CSV file needs a header line with exactly the columns text and label "
                "(found: %(found)s)."
            )
            % {"found": ", ".join(header) or _("nothing")},
            [RowError(1, _("the header must be text,label"))],
        )
    text_at, label_at = header.index("text"), header.index("label")
    parsed = ParsedDataset(format=CLASSIFICATION, is_csv=True)
    errors: list[RowError] = []
    start = reader.line_num + 1
    try:
        for record in reader:
            line, start = start, reader.line_num + 1
            if not record or all(not cell.strip() for cell in record):
                errors.append(RowError(line, _("an empty row")))
            elif len(record) != 2:
                errors.append(
                    RowError(
                        line,
                        _("%(count)s columns; a row has text and label") % {"count": len(record)},
                    )
                )
            else:
                problem = _check_classification(
                    {"text": record[text_at], "label": record[label_at]}
                )
                if problem:
                    errors.append(RowError(line, problem))
                else:
                    parsed.rows.append({"text": record[text_at], "label": record[label_at].strip()})
                    parsed.lines.append(line)
            if len(errors) >= MAX_REPORTED_ERRORS:
                break
    except csv.Error as exc:
        errors.append(RowError(reader.line_num, _("not valid CSV (%(reason)s)") % {"reason": exc}))
    if errors:
        raise _refuse(errors)
    if not parsed.rows:
        raise DatasetInvalid(_("The file has a header but no rows."))
    return parsed


def _check_line(line: str, parsed: ParsedDataset) -> str | None:
    if not line.strip():
        return _("an empty line; each line must hold one JSON object")
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        return _("not valid JSON (%(reason)s at column %(column)s)") % {
            "reason": exc.msg,
            "column": exc.colno,
        }
    if not isinstance(row, dict):
        return _("not a JSON object")
    if "messages" in row:
        kind, check = CHAT, _check_chat
    elif "prompt" in row:
        kind, check = PROMPT_COMPLETION, _check_prompt_completion
    elif "text" in row:
        kind, check = CLASSIFICATION, _check_classification
    else:
        return _('a row needs "messages" (chat), "prompt" and "completion", or "text" and "label"')
    if parsed.format and kind != parsed.format:
        return _("a %(kind)s row in a %(format)s file; use one shape per file") % {
            "kind": kind,
            "format": parsed.format,
        }
    problem = check(row)
    if problem is None:
        parsed.format = parsed.format or kind
        if kind == CLASSIFICATION:
            row = {"text": row["text"], "label": str(row["label"]).strip()}
        parsed.rows.append(row)
    return problem


def _check_chat(row: dict[str, Any]) -> str | None:
    if set(row) != {"messages"}:
        unknown = ", ".join(quoted(k) for k in sorted(set(row) - {"messages"}))
        return _("unknown keys %(keys)s; a chat row has only messages") % {"keys": unknown}
    messages = row["messages"]
    if not isinstance(messages, list) or not messages:
        return _('"messages" must be a non-empty list')
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            return _('%(where)s must be an object with exactly "role" and "content"') % {
                "where": where
            }
        if message["role"] not in ROLES:
            return _("%(where)s.role must be one of %(roles)s") % {
                "where": where,
                "roles": ", ".join(ROLES),
            }
        if message["role"] == "system" and index != 0:
            return _("%(where)s: a system message may only come first") % {"where": where}
        if not isinstance(message["content"], str) or not message["content"].strip():
            return _("%(where)s.content must be non-empty text") % {"where": where}
    if messages[-1]["role"] != "assistant":
        return _("the last message must be the assistant's (it is what the model learns)")
    first_turn = messages[1] if messages[0]["role"] == "system" else messages[0]
    if first_turn["role"] != "user":
        return _("the conversation must start with a user message (after an optional system one)")
    return None


def _check_prompt_completion(row: dict[str, Any]) -> str | None:
    if set(row) != {"prompt", "completion"}:
        return _('a prompt row has exactly "prompt" and "completion"')
    for key in ("prompt", "completion"):
        if not isinstance(row[key], str) or not row[key].strip():
            return _('"%(key)s" must be non-empty text') % {"key": key}
    return None


def _check_classification(row: dict[str, Any]) -> str | None:
    if set(row) != {"text", "label"}:
        return _('a classification row has exactly "text" and "label"')
    if not isinstance(row["text"], str) or not row["text"].strip():
        return _('"text" must be non-empty text')
    label = row["label"]
    if isinstance(label, bool) or not isinstance(label, str | int):
        return _('"label" must be text or a whole number')
    if not str(label).strip():
        return _('"label" must not be empty')
    if len(str(label)) > MAX_LABEL_CHARS:
        return _('"label" must be at most %(limit)s characters') % {"limit": MAX_LABEL_CHARS}
    return None


# -- splits ------------------------------------------------------------------------------------
def holdout_split(
    parsed: ParsedDataset, validation: ParsedDataset | None, fraction: float, seed: int
) -> tuple[ParsedDataset, ParsedDataset]:
    """The training rows and the validation rows: ``validation`` when given, else a seeded
    ``fraction`` of ``parsed`` held out (at least one row stays for training)."""
    if validation is not None:
        return parsed, validation
    order = list(range(len(parsed.rows)))
    random.Random(seed).shuffle(order)
    held = math.ceil(len(order) * fraction) if fraction and len(order) > 1 else 0
    held = min(held, len(order) - 1)

    def pick(indexes: list[int]) -> ParsedDataset:
        indexes = sorted(indexes)
        return ParsedDataset(
            parsed.format, [parsed.rows[i] for i in indexes], [parsed.lines[i] for i in indexes]
        )

    return pick(order[held:]), pick(order[:held])


def stratified_split(
    parsed: ParsedDataset, fractions: tuple[float, ...], seed: int
) -> list[ParsedDataset]:
    """Split classification rows into the training part and one part per fraction, each label
    divided in the same proportions (seeded, rounded; a label with a few rows still gives one to
    each part while it has three or more). Every label keeps at least one training row."""
    by_label: dict[str, list[int]] = {}
    for index, row in enumerate(parsed.rows):
        by_label.setdefault(row["label"], []).append(index)
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    rng = random.Random(seed)
    for label in sorted(by_label):
        indexes = by_label[label]
        rng.shuffle(indexes)
        start = 0
        for part, fraction in enumerate(fractions, start=1):
            take = round(len(indexes) * fraction) or (1 if len(indexes) - start >= 3 else 0)
            take = max(min(take, len(indexes) - start - 1), 0)
            parts[part].extend(indexes[start : start + take])
            start += take
        parts[0].extend(indexes[start:])
    return [
        ParsedDataset(
            parsed.format,
            [parsed.rows[i] for i in sorted(part)],
            [parsed.lines[i] for i in sorted(part)],
        )
        for part in parts
    ]
