"""Two runs of the same eval set side by side: per grader they share, the paired difference of
their scores with its bootstrap interval, McNemar's exact test on the items that pass in one
and fail in the other, and those items themselves, each with both answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .graders import grader_name
from .models import EvalResult, EvalRun
from .stats import Interval, mcnemar, paired_difference


@dataclass
class Flip:
    item: Any  # EvalItem
    before: EvalResult
    after: EvalResult


@dataclass
class GraderComparison:
    grader: str
    n: int  # items graded by it in both runs
    mean_a: float
    mean_b: float
    difference: Interval | None
    passed_a: int
    passed_b: int
    p_value: float | None  # McNemar's, for a pass/fail grader
    to_pass: list[Flip] = field(default_factory=list)  # failed in A, passed in B
    to_fail: list[Flip] = field(default_factory=list)

    @property
    def significant(self) -> bool:
        """The interval of the difference excludes zero."""
        d = self.difference
        return d is not None and (d.low > 0 or d.high < 0)


def _scores(result: EvalResult, index: int) -> tuple[float, bool | None] | None:
    """The score and pass of ``result`` by grader ``index``; an errored item scores 0 and
    fails (as in the run's aggregates); None when it was not graded or the grader does not
    apply."""
    if result.graded_at is None:
        return None
    if result.grades is None:
        return 0.0, False
    given = result.grades[index]
    if given["passed"] is None:
        return None
    return float(given["score"]), bool(given["passed"])


def compare(
    a: EvalRun, b: EvalRun, results_a: list[EvalResult], results_b: list[EvalResult]
) -> list[GraderComparison]:
    """``b`` against ``a`` (differences are B - A), per grader configuration both runs have,
    over the items graded by it in both. Precondition: the runs are of the same eval set. The
    interval uses ``b``'s seed."""
    by_item = {r.item_id: r for r in results_a}
    pairs = [(by_item[r.item_id], r) for r in results_b if r.item_id in by_item]
    found = []
    for index_b, config in enumerate(b.graders):
        if config not in a.graders:
            continue
        index_a = a.graders.index(config)
        scores_a: list[float] = []
        scores_b: list[float] = []
        comparison = GraderComparison(grader_name(config), 0, 0.0, 0.0, None, 0, 0, None)
        only_a = only_b = 0
        for before, after in pairs:
            x, y = _scores(before, index_a), _scores(after, index_b)
            if x is None or y is None:
                continue
            scores_a.append(x[0])
            scores_b.append(y[0])
            comparison.passed_a += bool(x[1])
            comparison.passed_b += bool(y[1])
            if x[1] and not y[1]:
                only_a += 1
                comparison.to_fail.append(Flip(before.item, before, after))
            elif y[1] and not x[1]:
                only_b += 1
                comparison.to_pass.append(Flip(before.item, before, after))
        comparison.n = len(scores_a)
        if scores_a:
            comparison.mean_a = sum(scores_a) / len(scores_a)
            comparison.mean_b = sum(scores_b) / len(scores_b)
            comparison.difference = paired_difference(scores_a, scores_b, seed=b.seed)
            comparison.p_value = mcnemar(only_a, only_b)
        found.append(comparison)
    return found
