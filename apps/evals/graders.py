"""Graders: what a sample (the model's answer to an item) earns, by exact, documented rules.
Each returns a Grade: ``passed`` (or None where the grader has no pass mark), a ``score`` in
[0, 1], and the reason in words.

Rules common to all: the sample is compared with its surrounding whitespace removed; an item's
ideals are compared as written; "any ideal" means the item passes when one of them does.

- ``string_check`` with an ``operation``:
  ``eq`` the sample equals an ideal; ``ne`` it equals none of them; ``ieq`` equals one ignoring
  case (Unicode case folding); ``like`` contains one; ``ilike`` contains one ignoring case;
  ``regex`` an ideal, read as a Python regular expression, matches somewhere in the sample
  (``re.search``: anchor it with ``^`` and ``$`` to match the whole answer).
- ``numeric``: the first number written in the sample (digits with an optional sign, decimal
  point and exponent; thousands separators "," are read through) is within ``tolerance`` (an
  absolute difference, 0 by default) of an ideal read as a number. An item none of whose
  ideals holds a number is not graded by it (``passed`` None).
- ``json_valid``: the whole sample is one JSON value.
- ``json_schema``: the whole sample is JSON valid against the item's schema (draft 2020-12).
- ``label``: the sample, ignoring case, is the item's label; a sample that is none of the set's
  labels still fails, and the per-label figures (``label_metrics``) count it as predicting no
  label.

An empty sample fails every grader but ``ne`` (which passes unless an ideal is empty, and ideals
never are).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator

STRING_OPERATIONS = ("eq", "ne", "ieq", "like", "ilike", "regex")
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")


@dataclass(frozen=True)
class Grade:
    passed: bool | None
    score: float
    reason: str


def _grade(passed: bool, reason: str) -> Grade:
    return Grade(passed, 1.0 if passed else 0.0, reason)


def string_check(sample: str, ideals: Sequence[str], operation: str) -> Grade:
    """The sample against the ideals by ``operation`` (one of STRING_OPERATIONS)."""
    answer = sample.strip()
    if operation == "ne":
        same = [i for i in ideals if answer == i]
        return _grade(not same, "equals an ideal" if same else "equals no ideal")
    if not answer:
        return _grade(False, "the answer is empty")
    if operation == "eq":
        hit = answer in ideals
    elif operation == "ieq":
        hit = any(answer.casefold() == i.casefold() for i in ideals)
    elif operation == "like":
        hit = any(i in answer for i in ideals)
    elif operation == "ilike":
        hit = any(i.casefold() in answer.casefold() for i in ideals)
    elif operation == "regex":
        hit = any(re.search(i, answer) is not None for i in ideals)
    else:
        raise ValueError(f"unknown string operation {operation!r}")
    verb = {"eq": "equals", "ieq": "equals", "like": "contains", "ilike": "contains"}
    what = verb.get(operation, "matches")
    return _grade(hit, f"{what} an ideal" if hit else f"{what} no ideal")


def first_number(text: str) -> float | None:
    """The first number written in ``text`` (see ``numeric``), or None."""
    found = _NUMBER.search(text)
    return float(found.group().replace(",", "")) if found else None


def numeric(sample: str, ideals: Sequence[str], tolerance: float = 0.0) -> Grade:
    targets = [n for n in (first_number(i) for i in ideals) if n is not None]
    if not targets:
        return Grade(None, 0.0, "no ideal is a number")
    value = first_number(sample)
    if value is None:
        return _grade(False, "no number in the answer")
    best = min(abs(value - t) for t in targets)
    ok = best <= tolerance or math.isclose(best, tolerance)
    return _grade(ok, f"{value:g} is {best:g} from the nearest ideal (tolerance {tolerance:g})")


def json_valid(sample: str) -> Grade:
    try:
        json.loads(sample.strip())
    except json.JSONDecodeError as exc:
        return _grade(False, f"not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}")
    return _grade(True, "valid JSON")


def json_schema(sample: str, schema: dict[str, Any] | None) -> Grade:
    if schema is None:
        return Grade(None, 0.0, "the item has no schema")
    try:
        value = json.loads(sample.strip())
    except json.JSONDecodeError as exc:
        return _grade(False, f"not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}")
    error = next(iter(Draft202012Validator(schema).iter_errors(value)), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "the answer"
        return _grade(False, f"{where}: {error.message}")
    return _grade(True, "valid against the schema")


def label(sample: str, expected: str) -> Grade:
    if not expected:
        return Grade(None, 0.0, "the item has no label")
    answer = sample.strip()
    if not answer:
        return _grade(False, "the answer is empty")
    ok = answer.casefold() == expected.casefold()
    return _grade(ok, "the expected label" if ok else f"not the label {expected}")


@dataclass(frozen=True)
class LabelFigures:
    precision: float
    recall: float
    f1: float
    support: int  # items whose expected label this is


def label_metrics(pairs: Sequence[tuple[str, str]]) -> tuple[float, dict[str, LabelFigures]]:
    """Accuracy and per-label precision, recall and F1 over (expected, answer) pairs. An answer
    is read as a label ignoring case and surrounding whitespace; one that is no expected label
    predicts none (it lowers the recall of its item's label and no label's precision). A label
    never predicted has precision 0, as one with no items has recall 0."""
    by_fold = {e.casefold(): e for e, _ in pairs}
    predicted = [by_fold.get(a.strip().casefold()) for _, a in pairs]
    expected = [e for e, _ in pairs]
    accuracy = sum(p == e for p, e in zip(predicted, expected, strict=True)) / len(pairs)
    figures = {}
    for name in sorted(set(expected)):
        hits = sum(p == e == name for p, e in zip(predicted, expected, strict=True))
        chosen = sum(p == name for p in predicted)
        support = sum(e == name for e in expected)
        precision = hits / chosen if chosen else 0.0
        recall = hits / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        figures[name] = LabelFigures(precision, recall, f1, support)
    return accuracy, figures


# -- graders as a run names them -----------------------------------------------------------
GRADER_TYPES = ("string_check", "numeric", "json_valid", "json_schema", "label")


def check_grader(config: Any) -> dict[str, Any]:
    """``config`` as a run stores it; ValueError saying what is wrong otherwise."""
    if not isinstance(config, dict) or config.get("type") not in GRADER_TYPES:
        raise ValueError(f"a grader's type is one of {', '.join(GRADER_TYPES)}")
    kind = config["type"]
    if kind == "string_check":
        operation = config.get("operation", "eq")
        if operation not in STRING_OPERATIONS:
            raise ValueError(f"a string check's operation is one of {', '.join(STRING_OPERATIONS)}")
        return {"type": kind, "operation": operation}
    if kind == "numeric":
        tolerance = config.get("tolerance", 0)
        if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or tolerance < 0:
            raise ValueError("a numeric grader's tolerance is a number, 0 or more")
        return {"type": kind, "tolerance": float(tolerance)}
    return {"type": kind}


def grader_name(config: dict[str, Any]) -> str:
    """How a page names the grader: ``string_check (ilike)``, ``numeric (±0.5)``, ``label``."""
    if config["type"] == "string_check":
        return f"string_check ({config['operation']})"
    if config["type"] == "numeric":
        return f"numeric (±{config['tolerance']:g})"
    return str(config["type"])


def grade(
    config: dict[str, Any],
    sample: str,
    *,
    ideals: Sequence[str],
    item_label: str = "",
    schema: dict[str, Any] | None = None,
) -> Grade:
    """``sample`` graded by the grader ``config`` (from ``check_grader``) against its item."""
    kind = config["type"]
    if kind == "string_check":
        if not ideals:
            return Grade(None, 0.0, "the item has no ideal")
        return string_check(sample, ideals, config["operation"])
    if kind == "numeric":
        if not ideals:
            return Grade(None, 0.0, "the item has no ideal")
        return numeric(sample, ideals, config["tolerance"])
    if kind == "json_valid":
        return json_valid(sample)
    if kind == "json_schema":
        return json_schema(sample, schema)
    return label(sample, item_label)
