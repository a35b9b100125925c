"""Uncertainty of mAP from per-query APs: bootstrap intervals and paired significance tests.

A run record keeps each query's AP in query order, and two records of one dataset
fingerprint have the same queries in the same order, so their AP lists are paired by
position. mAP is the mean over queries; the queries are the sample. Queries without
positives (AP `None` / NaN) are left out, as they are from mAP.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

MAX_CHUNK_BYTES = 100 * 2**20
"""Memory of one block of resamples (indices or sign flips) drawn at once."""


@dataclass(frozen=True)
class PairedComparison:
    """Run B against run A on the same queries (differences are B - A, as fractions)."""

    mean_difference: float
    """mAP of B minus mAP of A over the paired queries."""
    ci_low: float
    ci_high: float
    """Percentile bootstrap interval of `mean_difference` (queries resampled in pairs)."""
    p_randomisation: float
    """Two-sided paired randomisation (sign-flip) test, (hits + 1) / (resamples + 1)."""
    p_wilcoxon: float
    """Wilcoxon signed-rank test (zero differences dropped; all zero -> 1.0)."""
    queries: int
    """Queries paired (those with an AP in both runs)."""
    confidence: float = 0.95
    resamples: int = 10_000


def _values(ap: Sequence[float | None]) -> np.ndarray:
    """The APs as floats, None as NaN."""
    return np.array([np.nan if v is None else v for v in ap], dtype=np.float64)


def _chunks(total: int, row_bytes: int) -> Iterator[int]:
    """Sizes of blocks of `total` rows of `row_bytes` each, none over MAX_CHUNK_BYTES."""
    rows = max(1, MAX_CHUNK_BYTES // max(1, row_bytes))
    for start in range(0, total, rows):
        yield min(rows, total - start)


def _percentile_interval(sample: np.ndarray, confidence: float, resamples: int,
                         seed: int) -> tuple[float, float]:
    from scipy.stats import bootstrap

    mean = float(sample.mean()) if len(sample) else float("nan")
    if len(sample) < 2 or np.ptp(sample) == 0:
        return mean, mean
    result = bootstrap((sample,), np.mean, n_resamples=resamples, vectorized=True,
                       batch=max(1, MAX_CHUNK_BYTES // (8 * len(sample))),
                       confidence_level=confidence, method="percentile",
                       rng=np.random.default_rng(seed))
    interval = result.confidence_interval
    return float(interval.low), float(interval.high)


def bootstrap_interval(ap: Sequence[float | None], *, confidence: float = 0.95,
                       resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean AP (mAP) over queries.

    Queries are resampled with replacement `resamples` times (`scipy.stats.bootstrap`,
    `method="percentile"`, generator `np.random.default_rng(seed)`). The percentile
    method, not BCa: APs are often tied at 1.0, and BCa's jackknife acceleration is then
    undefined (scipy warns and returns NaN) for many real runs. Queries without positives
    (None) are left out. All APs equal give (x, x); fewer than 2 queries give
    (mean, mean): there is nothing to resample. ValueError when no query has an AP.
    """
    sample = _values(ap)
    sample = sample[~np.isnan(sample)]
    if not len(sample):
        raise ValueError("no query has an AP: the interval of an empty mean is undefined")
    return _percentile_interval(sample, confidence, resamples, seed)


def randomisation_p(differences: Sequence[float], *, resamples: int = 10_000,
                    seed: int = 0) -> float:
    """Two-sided paired randomisation test of a zero mean difference: under the null
    each query's difference is as likely to have the other sign, so the signs are
    flipped at random `resamples` times and p = (hits + 1) / (resamples + 1), a hit being
    a flipped |mean| at least the observed |mean| (the +1 counts the observed labelling,
    so p is never 0). All differences zero gives 1.0."""
    d = np.asarray(differences, dtype=np.float64)
    if not len(d):
        raise ValueError("no paired query: a test needs at least one")
    observed = abs(d.sum())
    tolerance = 1e-9 * max(1.0, float(np.abs(d).sum()))  # sums in another order
    rng = np.random.default_rng(seed)
    hits = 0
    for rows in _chunks(resamples, 8 * len(d)):
        flipped = rng.integers(0, 2, size=(rows, len(d)), dtype=np.int8)
        sums = d.sum() - 2.0 * (flipped @ d)  # a flipped query adds -d instead of d
        hits += int(np.count_nonzero(np.abs(sums) >= observed - tolerance))
    return (hits + 1) / (resamples + 1)


def wilcoxon_p(differences: Sequence[float]) -> float:
    """Wilcoxon signed-rank p-value (two-sided, `scipy.stats.wilcoxon`); zero differences
    (queries both runs answer equally, often AP 1.0 in both) are dropped, and with no
    non-zero difference left p = 1.0."""
    from scipy.stats import wilcoxon

    d = np.asarray(differences, dtype=np.float64)
    if not np.any(d != 0):
        return 1.0
    return float(wilcoxon(d, zero_method="wilcox").pvalue)


def paired_test(ap_a: Sequence[float | None], ap_b: Sequence[float | None], *,
                resamples: int = 10_000, seed: int = 0,
                confidence: float = 0.95) -> PairedComparison:
    """Run B against run A on the same queries: the mean AP difference (B - A) with its
    paired percentile bootstrap interval, a paired randomisation p-value and the
    Wilcoxon signed-rank p-value. `ap_a[i]` and `ap_b[i]` are the APs of query i;
    queries without an AP in either run are left out. ValueError when the lists differ
    in length or no query has an AP in both."""
    a, b = _values(ap_a), _values(ap_b)
    if len(a) != len(b):
        raise ValueError(f"AP lists differ in length ({len(a)} and {len(b)} queries): "
                         "the runs were not made on the same queries")
    both = ~(np.isnan(a) | np.isnan(b))
    d = b[both] - a[both]
    if not len(d):
        raise ValueError("no query has an AP in both runs")
    low, high = _percentile_interval(d, confidence, resamples, seed)
    return PairedComparison(
        mean_difference=float(d.mean()), ci_low=low, ci_high=high,
        p_randomisation=randomisation_p(d, resamples=resamples, seed=seed),
        p_wilcoxon=wilcoxon_p(d), queries=int(len(d)), confidence=confidence,
        resamples=resamples)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order given: the i-th smallest of m
    p-values is multiplied by (m - i + 1), then made non-decreasing in that order and
    capped at 1 (Holm 1979). Rejecting where the adjusted p < alpha controls the
    family-wise error rate at alpha."""
    p = np.asarray(pvalues, dtype=np.float64)
    m = len(p)
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, p[order] * (m - np.arange(m)))
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return [float(v) for v in adjusted]


@dataclass(frozen=True)
class SeedSpread:
    """One number over runs that differ only in their seed."""

    mean: float
    std: float
    """Sample standard deviation (n - 1); 0.0 for a single run."""
    runs: int


def across_seeds(values: Sequence[float]) -> SeedSpread:
    """Mean and sample standard deviation of a metric over runs with different seeds
    (`bench run --seeds`); each run keeps its own record."""
    v = np.asarray([x for x in values if x is not None], np.float64)
    if v.size == 0:
        raise ValueError("no values to aggregate")
    return SeedSpread(float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0,
                      int(v.size))
