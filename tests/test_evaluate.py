"""The evaluator: settings, query exclusion, mP@k, N-S, counting and input validation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from irbench.datasets.base import REVISITED_SETTINGS, Protocol, QueryTruth
from irbench.harness.evaluate import evaluate


def test_standard_protocol_shape_and_values():
    gt = [QueryTruth(positives=[1, 2], junk=[8, 9]), QueryTruth(positives=[3])]
    ranks = np.array([[9, 1, 8, 5, 2], [3, 0, 1, 2, -1]])
    out = evaluate(ranks, gt, Protocol(precision_at=(1, 5)))
    assert out["depth"] == 5
    assert set(out) == {"depth", "settings"}
    s = out["settings"][""]
    assert s["ap"] == pytest.approx([19 / 24, 1.0])
    assert s["map"] == pytest.approx((19 / 24 + 1.0) / 2)
    assert s["precision_at"] == pytest.approx({"1": 1.0, "5": (2 / 3 + 1.0) / 2})
    assert (s["queries_evaluated"], s["queries_without_positives"]) == (2, 0)
    json.dumps(out, allow_nan=False)


def test_revisited_easy_medium_hard():
    gt = [QueryTruth(easy=[1, 2], hard=[3], junk=[4]), QueryTruth(easy=[0], junk=[1])]
    ranks = np.array([[4, 3, 1, 5, 2, 0], [0, 1, 2, 3, 4, 5]])
    out = evaluate(ranks, gt, Protocol(settings=REVISITED_SETTINGS, precision_at=(1, 5)))
    easy, medium, hard = (out["settings"][k] for k in ("easy", "medium", "hard"))
    # easy: junk {4, 3}: nonjunk [1, 5, 2, 0] -> 1/2 + 1/2 (1/2 + 2/3)/2
    assert easy["ap"] == pytest.approx([19 / 24, 1.0])
    assert easy["precision_at"] == pytest.approx({"1": 1.0, "5": (2 / 3 + 1.0) / 2})
    # medium: nonjunk [3, 1, 5, 2, 0] -> 1/3 + 1/3 + 1/3 (2/3 + 3/4)/2
    assert medium["ap"] == pytest.approx([65 / 72, 1.0])
    assert medium["precision_at"] == pytest.approx({"1": 1.0, "5": (3 / 4 + 1.0) / 2})
    # hard: junk {4, 1, 2}: nonjunk [3, 5, 0]; query 2 has no hard positives
    assert hard["ap"][0] == pytest.approx(1.0) and hard["ap"][1] is None
    assert hard["map"] == pytest.approx(1.0)
    assert hard["precision_at"] == pytest.approx({"1": 1.0, "5": 1.0})
    assert (hard["queries_evaluated"], hard["queries_without_positives"]) == (1, 1)
    assert (easy["queries_evaluated"], easy["queries_without_positives"]) == (2, 0)
    json.dumps(out, allow_nan=False)


def test_no_query_with_positives_gives_none():
    out = evaluate(np.array([[0, 1]]), [QueryTruth(positives=[])], Protocol(precision_at=(1,)))
    s = out["settings"][""]
    assert s["map"] is None and s["ap"] == [None] and s["precision_at"] == {"1": None}
    assert (s["queries_evaluated"], s["queries_without_positives"]) == (0, 1)


def test_holidays_rule_query_never_counts():
    ranks = np.array([[0, 1, 5, 2], [0, 1, 5, 2], [0, 1, 5, 2]])
    gt = [QueryTruth(positives=[1, 2]), QueryTruth(positives=[0, 1, 2]),
          QueryTruth(positives=[1, 2])]
    qdb = [0, 0, None]
    out = evaluate(ranks, gt, Protocol(exclude_query=True), qdb)
    # query 0 skipped as junk: nonjunk [1, 5, 2] -> 19/24, also when listed as a positive
    # query 3 is not in the database: 0 takes a position -> 1/8 + 5/24
    assert out["settings"][""]["ap"] == pytest.approx([19 / 24, 19 / 24, 1 / 3])
    off = evaluate(ranks, gt, Protocol(exclude_query=False), qdb)
    assert off["settings"][""]["ap"][0] == pytest.approx(1 / 3)


def test_ns_score_includes_query_on_raw_ranking():
    gt = [QueryTruth(positives=[1, 2, 3], junk=[7]), QueryTruth(positives=[5, 6, 7])]
    ranks = np.array([[0, 1, 7, 3, 2], [4, 5, 6, 7, 0]])
    out = evaluate(ranks, gt, Protocol(exclude_query=True, ns_score=True), [0, 4])
    assert out["ns_score"] == pytest.approx(3.5)
    assert out["settings"][""]["ap"][1] == pytest.approx(1.0)
    assert "ns_score" not in evaluate(ranks, gt, Protocol(), [0, 4])


def test_ties_ranks_taken_as_given():
    gt = [QueryTruth(positives=[1, 2])]
    a = evaluate(np.array([[1, 7, 8, 2]]), gt, Protocol())["settings"][""]["map"]
    b = evaluate(np.array([[1, 8, 7, 2]]), gt, Protocol())["settings"][""]["map"]
    assert a == b


@pytest.mark.parametrize(
    ("ranks", "qdb", "match"),
    [
        (np.array([1, 2]), None, "2-D"),
        (np.zeros((2, 3, 1), np.int64), None, "2-D"),
        (np.array([[1, 2]]), None, "rows"),
        (np.array([[1.0, 2.0], [1.0, 2.0]]), None, "integer"),
        (np.array([[1, -2], [1, 2]]), None, "-1"),
        (np.array([[1, 2], [1, 2]]), [0], "query_db_index"),
    ],
)
def test_validation(ranks, qdb, match):
    gt = [QueryTruth(positives=[1]), QueryTruth(positives=[2])]
    with pytest.raises(ValueError, match=match):
        evaluate(ranks, gt, Protocol(), qdb)


@pytest.mark.parametrize("exclude_query", [False, True])
@pytest.mark.parametrize("depth", [7, 40])
def test_evaluating_in_blocks_of_a_mapped_ranking_gives_the_same_metrics(tmp_path, depth,
                                                                         exclude_query):
    """Streaming evaluation (a memory-mapped ranking read a few queries at a time) equals
    the in-memory one, key for key, at full and at truncated depth."""
    rng = np.random.default_rng(1)
    n_db, nq = 40, 11
    ranks = np.stack([rng.permutation(n_db)[:depth] for _ in range(nq)]).astype(np.int32)
    gt = [QueryTruth(easy=rng.choice(n_db, 3, replace=False).tolist(),
                     hard=rng.choice(n_db, q % 3, replace=False).tolist(),
                     junk=rng.choice(n_db, 2, replace=False).tolist()) for q in range(nq)]
    qdb = [int(rng.integers(n_db)) if q % 2 else None for q in range(nq)]
    protocol = Protocol(settings=REVISITED_SETTINGS, precision_at=(1, 5, 10),
                        exclude_query=exclude_query, ns_score=True)
    whole = evaluate(ranks, gt, protocol, qdb, n_db)
    np.save(tmp_path / "ranks.npy", ranks)
    mapped = np.load(tmp_path / "ranks.npy", mmap_mode="r")
    for block in (1, 3, 11, 50):
        assert evaluate(mapped, gt, protocol, qdb, n_db, block=block) == whole, block
    assert whole["settings"]["medium"]["map"] is not None
