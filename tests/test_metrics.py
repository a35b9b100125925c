"""AP, mP@k and N-S: hand-computed cases and the official Oxford compute_ap as reference."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest

from irbench.core.metrics import (
    average_precision,
    average_precision_batch,
    mean_ignoring_nan,
    ns_score,
    precision_at_k,
)

OXFORD_GT = Path(__file__).resolve().parents[2] / "shared/fixtures/official" / "oxford5k_gt"


# --- a straight port of the official compute_ap.cpp, on image names ---------------------------

def reference_compute_ap(pos: set[str], amb: set[str], ranked_list: list[str]) -> float:
    """Philbin et al., CVPR 2007, `compute_ap.cpp`, line by line (float64 instead of float)."""
    old_recall = 0.0
    old_precision = 1.0
    ap = 0.0
    intersect_size = 0
    j = 0
    for name in ranked_list:
        if name in amb:
            continue
        if name in pos:
            intersect_size += 1
        recall = intersect_size / float(len(pos))
        precision = intersect_size / (j + 1.0)
        ap += (recall - old_recall) * ((old_precision + precision) / 2.0)
        old_recall = recall
        old_precision = precision
        j += 1
    return ap


# --- hand-computed cases --------------------------------------------------------------------

def test_perfect_and_simple():
    assert average_precision([1, 2, 0], {1, 2}) == pytest.approx(1.0)
    # [N, P, N, P]: 1/2 * (0 + 1/2)/2 + 1/2 * (1/3 + 1/2)/2 = 1/8 + 5/24
    assert average_precision([0, 1, 2, 3], {1, 3}) == pytest.approx(1 / 3)


def test_junk_before_and_between_positives():
    # nonjunk ranking [1, 5, 2]: 1/2 * 1 + 1/2 * (1/2 + 2/3)/2 = 19/24
    assert average_precision([9, 1, 8, 5, 2], {1, 2}, {8, 9}) == pytest.approx(19 / 24)


def test_truncated_ranking_unretrieved_positives_add_nothing():
    assert average_precision([1, 5], {1, 2, 3}) == pytest.approx(1 / 3)
    assert average_precision([], {1}) == 0.0


def test_duplicates_in_ground_truth_count_once():
    assert average_precision([1, 2], [1, 1, 2], [7, 7]) == pytest.approx(1.0)


def test_index_both_positive_and_junk_is_junk_but_counts_in_p():
    # nonjunk [1, 2], P = 3: 1/3 + 1/3
    assert average_precision([3, 1, 2], {1, 2, 3}, {3}) == pytest.approx(2 / 3)


def test_no_positives_is_nan():
    assert math.isnan(average_precision([1, 2], set()))
    assert math.isnan(average_precision([1, 2], (), {1}))


def test_padding_takes_no_position():
    assert average_precision([1, -1, 2], {1, 2, 3}) == pytest.approx(2 / 3)
    assert average_precision([-1, 1], {1}) == pytest.approx(1.0)
    assert average_precision([1, 5, -1, -1], {1, 2}) == average_precision([1, 5], {1, 2})
    assert average_precision([-1, -1], {1}) == 0.0


def test_ties_order_of_nonpositives_does_not_matter():
    a = average_precision([1, 7, 8, 2, 4], {1, 2}, {4})
    b = average_precision([1, 8, 7, 2, 4], {1, 2}, {4})
    assert a == b


def test_batch_matches_single_and_reference():
    rng = np.random.default_rng(0)
    n_db, nq, k = 300, 40, 60
    ranks = np.stack([rng.permutation(n_db)[:k] for _ in range(nq)])
    ranks[3, 50:] = -1
    positives = [rng.choice(n_db, size=rng.integers(0, 20)) for _ in range(nq)]  # dupes too
    junk = [rng.choice(n_db, size=rng.integers(0, 10)) for _ in range(nq)]
    got = average_precision_batch(ranks, positives, junk)
    for q in range(nq):
        pos = {str(i) for i in positives[q]}
        ranked = [str(i) for i in ranks[q] if i >= 0]
        if not pos:
            assert math.isnan(got[q])
            continue
        ref = reference_compute_ap(pos, {str(i) for i in junk[q]}, ranked)
        assert got[q] == pytest.approx(ref, abs=1e-12)
        assert average_precision(ranks[q], positives[q], junk[q]) == got[q]


def test_chunked_lookup_table_gives_the_same(monkeypatch):
    from irbench.core import metrics

    rng = np.random.default_rng(1)
    ranks = np.stack([rng.permutation(100)[:30] for _ in range(25)])
    ranks[::4, 20:] = -1
    positives = [rng.choice(100, size=8) for _ in range(25)]
    junk = [rng.choice(100, size=3) for _ in range(25)]
    whole = average_precision_batch(ranks, positives, junk)
    prec = precision_at_k(ranks, positives, junk, (1, 10))
    monkeypatch.setattr(metrics, "_TABLE_BYTES", 250)  # 2 queries per chunk
    np.testing.assert_array_equal(average_precision_batch(ranks, positives, junk), whole)
    np.testing.assert_array_equal(precision_at_k(ranks, positives, junk, (1, 10)), prec)


def test_batch_empty_inputs():
    assert average_precision_batch(np.zeros((0, 5), np.int64), [], []).shape == (0,)
    out = average_precision_batch(np.zeros((2, 0), np.int64), [[1], []], [[], []])
    assert out[0] == 0.0 and math.isnan(out[1])


# --- the official Oxford ground truth -------------------------------------------------------

def _read_names(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def oxford_gt() -> dict[str, tuple[list[str], list[str]]]:
    if not OXFORD_GT.is_dir():
        pytest.skip(f"official Oxford ground truth not found at {OXFORD_GT}")
    gt = {}
    for good in sorted(OXFORD_GT.glob("*_good.txt")):
        name = good.name[: -len("_good.txt")]
        pos = _read_names(good) + _read_names(OXFORD_GT / f"{name}_ok.txt")
        gt[name] = (pos, _read_names(OXFORD_GT / f"{name}_junk.txt"))
    return gt


def test_oxford_fixture_sizes(oxford_gt):
    assert len(oxford_gt) == 55
    good = _read_names(OXFORD_GT / "all_souls_1_good.txt")
    assert good.count("all_souls_000091") == 2
    pos, junk = oxford_gt["all_souls_1"]
    assert len(set(pos)) == 78
    # P is the set size: one positive at the top gives exactly 1/78
    names = sorted(set(pos))
    index = {n: i for i, n in enumerate(names)}
    pos_idx = [index[n] for n in pos]
    assert average_precision([index[names[0]]], pos_idx) == pytest.approx(1 / 78)


def test_oxford_matches_official_compute_ap(oxford_gt):
    universe = sorted(
        {n for pos, junk in oxford_gt.values() for n in pos + junk}
        | {f"distractor_{i:03d}" for i in range(200)}
    )
    index = {n: i for i, n in enumerate(universe)}
    rnd = random.Random(1234)
    batch_ranks, batch_pos, batch_junk, batch_ref = [], [], [], []
    for name, (pos, junk) in oxford_gt.items():
        pos_set, junk_set = set(pos), set(junk)
        rankings = []
        for _ in range(2):
            perm = universe[:]
            rnd.shuffle(perm)
            rankings += [perm, perm[:50], perm[:500]]
        # positives placed early, mixed with junk and a few distractors
        early = sorted(pos_set | junk_set) + rnd.sample(universe, 20)
        rnd.shuffle(early)
        rest = [n for n in universe if n not in set(early)]
        rnd.shuffle(rest)
        rankings += [early + rest, (early + rest)[:50]]
        for ranked in rankings:
            ref = reference_compute_ap(pos_set, junk_set, ranked)
            ranked_idx = [index[n] for n in ranked]
            got = average_precision(ranked_idx, [index[n] for n in pos],
                                    [index[n] for n in junk])
            assert got == pytest.approx(ref, abs=1e-6), (name, len(ranked))
            if len(ranked) == 500:
                batch_ranks.append(ranked_idx)
                batch_pos.append([index[n] for n in pos])
                batch_junk.append([index[n] for n in junk])
                batch_ref.append(ref)
    got = average_precision_batch(np.array(batch_ranks), batch_pos, batch_junk)
    np.testing.assert_allclose(got, batch_ref, atol=1e-6)


# --- mP@k (revisited definition) ------------------------------------------------------------

def test_precision_at_k_all_positives_before_k():
    # positives at positions 1 and 3: kq = min(3, k)
    p = precision_at_k(np.array([[1, 5, 2, 6, 7]]), [[1, 2]], [[]], (1, 2, 5, 10))
    np.testing.assert_allclose(p[0], [1.0, 1 / 2, 2 / 3, 2 / 3])


def test_precision_at_k_junk_removed_first():
    p = precision_at_k(np.array([[9, 1, 8, 5, 2]]), [[1, 2]], [[8, 9]], (1, 5))
    np.testing.assert_allclose(p[0], [1.0, 2 / 3])


def test_precision_at_k_truncated_with_unretrieved_positive():
    p = precision_at_k(np.array([[1, 5, 2, -1]]), [[1, 2, 3]], [[]], (1, 2, 5))
    np.testing.assert_allclose(p[0], [1.0, 1 / 2, 2 / 5])


def test_precision_at_k_none_retrieved_and_no_positives():
    p = precision_at_k(np.array([[5, 6], [5, 6]]), [[1], []], [[], []], (1, 4))
    np.testing.assert_array_equal(p[0], [0.0, 0.0])
    assert np.isnan(p[1]).all()


def test_precision_at_k_rejects_bad_k():
    with pytest.raises(ValueError):
        precision_at_k(np.array([[1]]), [[1]], [[]], (0,))


# --- N-S score and helpers ------------------------------------------------------------------

def test_ns_score_raw_top4():
    ranks = np.array([[0, 3, 1, 9, 2], [4, -1, 5, 6, 7], [8, 8, 8, 8, 8]])
    relevant = [[0, 1, 2, 3], [4, 5, 6, 7], [0, 1, 2, 3]]
    np.testing.assert_array_equal(ns_score(ranks, relevant), [3.0, 3.0, 0.0])


def test_mean_ignoring_nan():
    assert mean_ignoring_nan([1.0, float("nan"), 0.5]) == (0.75, 2, 1)
    mean, used, excluded = mean_ignoring_nan([float("nan")])
    assert math.isnan(mean) and (used, excluded) == (0, 1)


def test_shape_and_dtype_errors():
    with pytest.raises(ValueError, match="2-D"):
        average_precision_batch(np.array([1, 2]), [[1]], [[]])
    with pytest.raises(ValueError, match="integer"):
        average_precision_batch(np.array([[1.0, 2.0]]), [[1]], [[]])
    with pytest.raises(ValueError, match="ground-truth sets"):
        average_precision_batch(np.array([[1, 2]]), [[1], [2]], [[], []])
