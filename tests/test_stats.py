"""Bootstrap intervals, paired tests and Holm's correction (`irbench.results.stats`),
against hand-computed cases and exact enumerations."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from scipy.stats import wilcoxon

from irbench.results import stats
from irbench.results.stats import bootstrap_interval, holm, paired_test, randomisation_p


def _aps(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).beta(2.0, 1.0, size=n)


def test_interval_contains_the_mean_and_shrinks_with_more_queries():
    few, many = _aps(30), _aps(3000)
    low, high = bootstrap_interval(few)
    assert low < few.mean() < high
    low_many, high_many = bootstrap_interval(many)
    assert low_many < many.mean() < high_many
    assert (high_many - low_many) < (high - low) / 4  # ~ 1/sqrt(n): 10 times narrower
    # about 2 x 1.96 standard errors wide
    se = few.std(ddof=1) / np.sqrt(len(few))
    assert 3.0 * se < high - low < 5.0 * se


def test_interval_is_seeded_and_leaves_out_queries_without_positives():
    ap = list(_aps(25))
    assert bootstrap_interval(ap, seed=3) == bootstrap_interval(ap, seed=3)
    assert bootstrap_interval(ap, seed=3) != bootstrap_interval(ap, seed=4)
    assert bootstrap_interval([*ap, None, None]) == bootstrap_interval(ap)
    narrow = bootstrap_interval(ap, confidence=0.5)
    wide = bootstrap_interval(ap, confidence=0.99)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]


def test_degenerate_intervals():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert bootstrap_interval([1.0] * 40) == (1.0, 1.0)  # BCa would fail here
        assert bootstrap_interval([0.25, None]) == (0.25, 0.25)  # one query
    with pytest.raises(ValueError, match="no query has an AP"):
        bootstrap_interval([None, None])


def test_identical_lists_differ_by_nothing():
    ap = list(_aps(50))
    result = paired_test(ap, ap)
    assert result.mean_difference == 0.0
    assert (result.ci_low, result.ci_high) == (0.0, 0.0)
    assert result.p_randomisation == 1.0
    assert result.p_wilcoxon == 1.0
    assert result.queries == 50


def test_a_clearly_better_run_has_a_small_p():
    a = _aps(60)
    b = np.minimum(1.0, a + np.random.default_rng(1).uniform(0.05, 0.15, size=60))
    result = paired_test(a, b)
    assert result.mean_difference == pytest.approx(float(np.mean(b - a)))
    assert 0 < result.ci_low < result.mean_difference < result.ci_high
    assert result.p_randomisation < 0.001
    assert result.p_wilcoxon < 0.001
    reverse = paired_test(b, a)
    assert reverse.mean_difference == pytest.approx(-result.mean_difference)
    assert reverse.ci_high < 0


def test_randomisation_p_counts_the_observed_labelling():
    # every difference positive: only the all-positive and all-negative sign patterns
    # (2 of 2^30) reach the observed mean, so no random flip does: p = 1 / (R + 1)
    assert randomisation_p(np.full(30, 0.1), resamples=999) == 1 / 1000
    assert randomisation_p(np.zeros(10), resamples=999) == 1.0


def _exact_p(d: np.ndarray) -> float:
    observed = abs(d.sum())
    sums = [abs(np.dot(signs, d)) for signs in itertools.product((1, -1), repeat=len(d))]
    return float(np.mean(np.asarray(sums) >= observed - 1e-12))


def test_randomisation_p_matches_exact_enumeration(monkeypatch):
    d = np.array([0.3, 0.1, -0.05, 0.2, 0.0, 0.15, -0.1, 0.25, 0.05, 0.12])
    exact = _exact_p(d)  # 1024 sign patterns
    assert 0.02 < exact < 0.2
    assert randomisation_p(d, resamples=40_000) == pytest.approx(exact, abs=0.006)
    monkeypatch.setattr(stats, "MAX_CHUNK_BYTES", 8 * len(d) * 7)  # blocks of 7 resamples
    assert randomisation_p(d, resamples=20_000) == pytest.approx(exact, abs=0.01)


def test_wilcoxon_drops_zero_differences():
    a = np.array([0.5, 0.6, 1.0, 1.0, 0.2, 0.7, 0.9, 0.4])
    b = np.array([0.7, 0.6, 1.0, 1.0, 0.5, 0.9, 0.8, 0.8])
    nonzero = (b - a)[b != a]
    assert paired_test(a, b).p_wilcoxon == pytest.approx(wilcoxon(nonzero).pvalue)
    assert paired_test(a, b).queries == 8


def test_queries_without_an_ap_in_either_run_are_left_out():
    result = paired_test([0.5, None, 0.2, 0.9], [0.7, 0.1, None, 0.8])
    assert result.queries == 2
    assert result.mean_difference == pytest.approx(0.05)


def test_lists_of_different_lengths_raise():
    with pytest.raises(ValueError, match=r"\(3 and 4 queries\)"):
        paired_test([0.1, 0.2, 0.3], [0.1, 0.2, 0.3, 0.4])


def test_holm_on_a_hand_computed_example():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == [1.0, 1.0]  # 0.5 x 2 = 1.0; then no lower than that, capped
    assert holm([0.02]) == [0.02]
    assert holm([]) == []
