"""A comparison of two runs lists exactly the items that flipped, and its figures are the paired
statistics of the stored grades (McNemar's p-value as scipy's exact binomial test has it)."""

from __future__ import annotations

import pytest
from django.utils import timezone
from scipy.stats import binomtest

from apps.evals.comparisons import compare
from apps.evals.models import EvalItem, EvalResult, EvalRun
from apps.evals.stats import paired_difference

EXACT = {"type": "string_check", "operation": "eq"}
JSON = {"type": "json_valid"}


def run(graders, seed=5) -> EvalRun:
    return EvalRun(graders=graders, seed=seed)


def results(passes: list[bool | None], graders=1) -> list[EvalResult]:
    """One result per item: True/False its grade by each grader, None an errored item."""
    made = []
    for line, passed in enumerate(passes, start=1):
        item = EvalItem(pk=line, line=line, input=f"q{line}", ideal=["x"])
        grades = (
            None
            if passed is None
            else [{"passed": passed, "score": float(passed), "reason": ""}] * graders
        )
        result = EvalResult(item=item, grades=grades, graded_at=timezone.now())
        made.append(result)
    return made


def test_the_flipped_items_and_the_figures():
    before = [True, True, False, False, False, True, False, None, False, True]
    after = [True, False, True, True, False, True, True, True, False, True]
    a, b = run([EXACT]), run([EXACT])
    [grader] = compare(a, b, results(before), results(after))
    assert grader.grader == "string_check (eq)" and grader.n == 10
    assert [f.item.line for f in grader.to_pass] == [3, 4, 7, 8]  # 8: errored in A
    assert [f.item.line for f in grader.to_fail] == [2]
    assert (grader.passed_a, grader.passed_b) == (4, 7)
    assert grader.p_value == pytest.approx(binomtest(1, 5, 0.5).pvalue, rel=1e-12)
    scores_a = [float(bool(x)) for x in before]
    scores_b = [float(bool(x)) for x in after]
    assert grader.difference == paired_difference(scores_a, scores_b, seed=b.seed)
    assert grader.mean_b - grader.mean_a == pytest.approx(0.3)


def test_only_the_graders_both_runs_have_are_compared():
    a, b = run([JSON, EXACT]), run([EXACT])
    before = results([True, False], graders=2)
    [grader] = compare(a, b, before, results([True, True]))
    assert grader.grader == "string_check (eq)"
    assert [f.item.line for f in grader.to_pass] == [2]
    assert compare(run([JSON]), run([EXACT]), results([True]), results([True])) == []


def test_items_a_grader_does_not_apply_to_are_left_out():
    a, b = run([EXACT]), run([EXACT])
    before, after = results([True, True]), results([True, False])
    before[1].grades = [{"passed": None, "score": 0.0, "reason": "the item has no ideal"}]
    [grader] = compare(a, b, before, after)
    assert grader.n == 1 and grader.to_fail == [] and grader.p_value == 1.0
