"""Each grader on hand-made samples, with the exact grade it must give (the rules are in
apps/evals/graders.py's docstring)."""

from __future__ import annotations

import pytest

from apps.evals import graders
from apps.evals.graders import Grade


@pytest.mark.parametrize(
    ("operation", "sample", "ideals", "passed"),
    [
        ("eq", " Paris \n", ["Paris"], True),
        ("eq", "paris", ["Paris"], False),
        ("eq", "Paris.", ["Paris"], False),
        ("eq", "Lyon", ["Paris", "Lyon"], True),  # any of several ideals
        ("ieq", "PARIS", ["paris"], True),
        ("ieq", "Straße", ["STRASSE"], True),  # case folding, not lower()
        ("like", "The capital is Paris.", ["Paris"], True),
        ("like", "The capital is paris.", ["Paris"], False),
        ("ilike", "The capital is paris.", ["Paris"], True),
        ("ne", "Lyon", ["Paris"], True),
        ("ne", "Paris", ["Lyon", "Paris"], False),
        ("regex", "The answer is 42.", [r"\b42\b"], True),
        ("regex", "The answer is 42.", [r"^42$"], False),  # anchors hold
        ("regex", "42", [r"^42$"], True),
        ("regex", "4 2", [r"^\d+$", r"^4 2$"], True),
        ("eq", "", ["Paris"], False),
        ("like", "   ", ["Paris"], False),
        ("ne", "", ["Paris"], True),  # an empty answer equals no ideal
    ],
)
def test_string_checks(operation, sample, ideals, passed):
    grade = graders.string_check(sample, ideals, operation)
    assert (grade.passed, grade.score) == (passed, 1.0 if passed else 0.0)


def test_string_check_reasons():
    assert graders.string_check("", ["x"], "eq") == Grade(False, 0.0, "the answer is empty")
    assert graders.string_check("a x b", ["x"], "like").reason == "contains an ideal"
    assert graders.string_check("a b", ["x"], "like").reason == "contains no ideal"
    assert graders.string_check("a b", ["^x"], "regex").reason == "matches no ideal"
    with pytest.raises(ValueError, match="unknown string operation"):
        graders.string_check("a", ["a"], "startswith")


@pytest.mark.parametrize(
    ("sample", "ideals", "tolerance", "passed"),
    [
        ("12", ["12"], 0, True),
        ("The answer is 12.", ["12"], 0, True),
        ("12.0", ["12"], 0, True),
        ("It is 1,234 apples", ["1234"], 0, True),
        ("-3.5", ["-3.4"], 0.1, True),
        ("-3.5", ["-3.4"], 0.05, False),
        ("3e2", ["300"], 0, True),
        ("13", ["12"], 0, False),
        ("12 then 13", ["13"], 0, False),  # the first number is the answer
        ("twelve", ["12"], 0, False),
        ("", ["12"], 0, False),
        ("7", ["six", "7"], 0, True),
    ],
)
def test_numeric(sample, ideals, tolerance, passed):
    assert graders.numeric(sample, ideals, tolerance).passed is passed


def test_numeric_reasons():
    assert graders.numeric("", ["1"]).reason == "no number in the answer"
    assert graders.numeric("5", ["five"]) == Grade(None, 0.0, "no ideal is a number")
    assert graders.numeric("5.5", ["5"], 1).reason == (
        "5.5 is 0.5 from the nearest ideal (tolerance 1)"
    )


def test_json_valid_and_json_schema():
    assert graders.json_valid(' {"a": 1} ').passed is True
    assert graders.json_valid('Sure! {"a": 1}') == Grade(
        False, 0.0, "not JSON: Expecting value at line 1, column 1"
    )
    assert graders.json_valid("").passed is False
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
        "additionalProperties": False,
    }
    assert graders.json_schema('{"city": "Paris", "population": 2100000}', schema).passed
    violation = graders.json_schema('{"city": "Paris", "population": "many"}', schema)
    assert violation == Grade(False, 0.0, "population: 'many' is not of type 'integer'")
    missing = graders.json_schema('{"city": "Paris"}', schema)
    assert missing == Grade(False, 0.0, "the answer: 'population' is a required property")
    assert graders.json_schema("Paris", schema).passed is False
    assert graders.json_schema("{}", None) == Grade(None, 0.0, "the item has no schema")


def test_label_grades_and_figures():
    assert graders.label(" Billing ", "billing").passed is True
    assert graders.label("bug", "billing") == Grade(False, 0.0, "not the label billing")
    assert graders.label("", "billing") == Grade(False, 0.0, "the answer is empty")
    assert graders.label("x", "").passed is None
    pairs = [
        ("billing", "billing"),
        ("billing", "bug"),
        ("bug", "bug"),
        ("bug", "I think it is a bug"),  # a judge answer that is none of the labels
        ("feature", "Billing"),
    ]
    accuracy, figures = graders.label_metrics(pairs)
    assert accuracy == pytest.approx(2 / 5)
    # billing: chosen twice (one right), 2 items (one found)
    assert figures["billing"] == graders.LabelFigures(0.5, 0.5, 0.5, 2)
    # bug: chosen twice (one right), 2 items (one found)
    assert figures["bug"] == graders.LabelFigures(0.5, 0.5, 0.5, 2)
    # feature: never chosen
    assert figures["feature"] == graders.LabelFigures(0.0, 0.0, 0.0, 1)
