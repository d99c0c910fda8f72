"""The statistics of eval results: intervals reproducible from their seed and right on data
whose answer is known, and McNemar's exact p-value as scipy computes it."""

from __future__ import annotations

import pytest
from scipy.stats import binomtest

from apps.evals.stats import Interval, bootstrap, mcnemar, paired_difference


def test_a_bootstrap_interval_is_reproducible_from_its_seed():
    values = [1, 0, 1, 1, 0, 1, 1, 1, 0, 1] * 6
    first = bootstrap(values, seed=7)
    assert bootstrap(values, seed=7) == first
    scores = [(i * 0.37) % 1 for i in range(60)]  # scores in [0, 1]: other seeds, other bounds
    assert bootstrap(scores, seed=7) == bootstrap(scores, seed=7)
    assert bootstrap(scores, seed=8) != bootstrap(scores, seed=7)
    assert first.mean == pytest.approx(0.7) and first.n == 60
    # The normal approximation's 95% half-width for p=0.7, n=60 is 0.116.
    assert first.low == pytest.approx(0.7 - 0.116, abs=0.03)
    assert first.high == pytest.approx(0.7 + 0.116, abs=0.03)


def test_constant_values_have_no_width():
    assert bootstrap([1.0] * 20, seed=1) == Interval(1.0, 1.0, 1.0, 20)
    with pytest.raises(ValueError):
        bootstrap([], seed=1)


def test_a_paired_difference_keeps_the_pairs():
    before = [0.0, 1.0] * 30
    after = [1.0, 1.0] * 30  # every failing item now passes; the passing ones still do
    difference = paired_difference(before, after, seed=3)
    assert difference.mean == pytest.approx(0.5)
    assert 0 < difference.low < 0.5 < difference.high
    same = paired_difference(before, before, seed=3)
    assert same == Interval(0.0, 0.0, 0.0, 60)
    with pytest.raises(ValueError):
        paired_difference([1.0], [1.0, 0.0], seed=3)


@pytest.mark.parametrize(("only_a", "only_b"), [(0, 0), (0, 8), (1, 9), (3, 4), (12, 30), (50, 50)])
def test_mcnemar_matches_scipy(only_a, only_b):
    expected = 1.0 if only_a + only_b == 0 else binomtest(only_a, only_a + only_b, 0.5).pvalue
    assert mcnemar(only_a, only_b) == pytest.approx(expected, rel=1e-12)
