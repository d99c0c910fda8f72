"""The statistics of eval results: a mean with its 95% bootstrap interval, the paired difference
of two runs on the same items with its interval, and McNemar's exact test for pass/fail graders.

The bootstrap is the percentile bootstrap over items (resampled with replacement, ``resamples``
times, numpy's PCG64 generator seeded with ``seed``), so an interval is reproducible from the
stored per-item grades and the seed. Written here rather than taken from scipy.stats.bootstrap,
which gives the same percentile interval but draws differently between versions: an interval a
page shows must come out the same when recomputed later.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 2_000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int


def bootstrap(
    values: Sequence[float], *, seed: int, resamples: int = RESAMPLES, level: float = LEVEL
) -> Interval:
    """The mean of ``values`` and its percentile bootstrap interval at ``level``. Precondition:
    at least one value."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        raise ValueError("no values to summarise")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, data.size, size=(resamples, data.size))
    means = data[picks].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Interval(float(data.mean()), float(low), float(high), int(data.size))


def paired_difference(
    a: Sequence[float], b: Sequence[float], *, seed: int, resamples: int = RESAMPLES
) -> Interval:
    """The mean of ``b - a`` item by item (b the newer run) with its bootstrap interval; the
    items are resampled together, so the pairing is kept. Precondition: same length, same
    items in the same order."""
    if len(a) != len(b):
        raise ValueError("the two runs must grade the same items")
    return bootstrap([y - x for x, y in zip(a, b, strict=True)], seed=seed, resamples=resamples)


def mcnemar(only_a: int, only_b: int) -> float:
    """McNemar's exact two-sided p-value from the discordant pairs: ``only_a`` items that pass
    in run A and fail in B, ``only_b`` the other way round (a binomial test of one against
    their sum at one half). 1.0 when there are none."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)
