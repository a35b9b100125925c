"""Shortlist verification machinery: tentative matches, re-ranking, the method flow."""

from __future__ import annotations

import numpy as np
import pytest

from irbench.errors import ConfigError
from irbench.methods.base import RunContext
from irbench.methods.registry import METHODS
from irbench.methods.sift.bow import BowMethod
from irbench.methods.sift.invfile import TfIdfIndex
from irbench.methods.sift.verification import (
    Geometry,
    VerificationMethod,
    _geometry,
    rerank,
    shortlist_matches,
    tentative_matches,
    word_multiplicity,
)

VERIFIERS = ("spatial-coding", "geometric-coding", "cop")


def _sorted(words):
    words = np.asarray(words)
    order = np.argsort(words, kind="stable")
    return words[order], order


def test_tentative_matches_are_all_pairs_of_a_shared_word():
    q = np.array([5, 1, 5, 9])
    d_words, d_order = _sorted([5, 7, 1, 5, 3])
    qi, di = tentative_matches(q, d_words, d_order, max_pairs_per_word=16, max_matches=100)
    pairs = sorted(zip(qi.tolist(), di.tolist(), strict=True))
    # word 5: query features 0, 2 x database features 0, 3; word 1: 1 x 2; word 9: none
    assert pairs == [(0, 0), (0, 3), (1, 2), (2, 0), (2, 3)]


def test_bursty_words_are_dropped_and_the_cap_keeps_the_rarest():
    q = np.array([4, 4, 4, 2, 8])
    d_words, d_order = _sorted([4, 4, 2, 8, 8])
    qi, di = tentative_matches(q, d_words, d_order, max_pairs_per_word=5, max_matches=100)
    assert 0 not in qi.tolist()  # word 4: 3 x 2 = 6 pairs > 5
    assert sorted(qi.tolist()) == [3, 4, 4]
    qi, di = tentative_matches(q, d_words, d_order, max_pairs_per_word=16, max_matches=2)
    assert qi.tolist() == [3, 4]  # word 2 (1 pair) first, then word 8 (2 pairs)
    assert d_words[np.argsort(d_order)][di].tolist() == [2, 8]


def test_rerank_orders_the_shortlist_by_verified_matches_and_keeps_the_rest():
    first = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    shortlist = np.array([0, 1, 2, 3])
    verified = np.array([1, 5, 0, 5])
    ranks, scores = rerank(first, verified, shortlist, k=6)
    assert ranks.tolist() == [1, 3, 0, 2, 4, 5]  # 5 (tie: higher first score), 1, 0; rest
    assert (np.diff(scores) <= 0).all()
    assert scores[3] > scores[4]  # the whole shortlist stays above the rest
    ranks, _ = rerank(first, np.zeros(4, np.int64), shortlist, k=6)
    assert ranks.tolist() == [0, 1, 2, 3, 4, 5]  # nothing verified: first-stage order


class _RejectAll(VerificationMethod):
    name = "reject-all"

    def inliers(self, query, database):
        return np.zeros(len(query), bool)


class _AcceptAll(VerificationMethod):
    name = "accept-all"

    def inliers(self, query, database):
        assert len(query) == len(database)
        return np.ones(len(query), bool)


def _demo():
    from irbench.datasets import load

    return load("demo", objects=5, database_views=3, distractors=6, query_views=1)


def _ranks(cls, ds, **config):
    method = cls(cls.Config(**config), RunContext.in_memory(dataset_id="demo@test"))
    method.fit(ds.train)
    method.index(ds.database)
    ranks, scores = method.query(ds.queries, len(ds.database))
    return ranks, scores, method.info()


def test_rejecting_everything_keeps_the_first_stage_ranking():
    ds = _demo()
    bow, _, _ = _ranks(BowMethod, ds)
    ranks, scores, info = _ranks(_RejectAll, ds, shortlist=5)
    np.testing.assert_array_equal(ranks, bow)
    assert (np.diff(scores, axis=1) <= 0).all()
    assert info["verified_pairs"] == 5 * len(ds.queries) and info["kept_matches"] == 0


def test_accepting_everything_counts_the_tentative_matches():
    ds = _demo()
    _, _, info = _ranks(_AcceptAll, ds, shortlist=4)
    assert info["kept_matches"] == info["tentative_matches"] > 0
    _, _, he_info = _ranks(_AcceptAll, ds, shortlist=4, first_stage="he-wgc")
    assert he_info["verified_pairs"] == info["verified_pairs"]


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="shortlist"):
        _RejectAll(_RejectAll.Config(shortlist=0))
    with pytest.raises(ConfigError, match="first_stage"):
        _RejectAll(_RejectAll.Config(first_stage="vlad"))


def test_hamming_filter_drops_distant_pairs_before_the_cap():
    q = np.array([5, 5, 1])
    d_words, d_order = _sorted([5, 1, 5])  # database features 0, 2 have word 5; 1 has word 1
    q_sig = np.array([0b0000, 0b1111, 0b0001], np.uint64)
    d_sig = np.array([0b0001, 0b0000, 0b1110], np.uint64)
    qi, di = tentative_matches(q, d_words, d_order, 16, 100, hamming=(q_sig, d_sig, 1))
    # kept: q0-d0 (1 bit), q1-d2 (1 bit), q2-d1 (1 bit); dropped: q0-d2 (3), q1-d0 (3)
    assert sorted(zip(qi.tolist(), di.tolist(), strict=True)) == [(0, 0), (1, 2), (2, 1)]
    qi, _ = tentative_matches(q, d_words, d_order, 16, 1, hamming=(q_sig, d_sig, 1))
    assert qi.tolist() == [2]  # the cap applies after the filter (word 1 is the rarest)


def test_hamming_filter_through_the_method():
    ds = _demo()
    _, _, plain = _ranks(_AcceptAll, ds, shortlist=4)
    _, _, filtered = _ranks(_AcceptAll, ds, shortlist=4, match_hamming_threshold=22)
    assert 0 < filtered["tentative_matches"] < plain["tentative_matches"]


# -- the shortlist at once against image by image ------------------------------------------


@pytest.mark.parametrize("hamming_threshold", [None, 20])
def test_shortlist_matches_equal_tentative_matches_image_by_image(hamming_threshold):
    rng = np.random.default_rng(3)
    n_images, vocab = 40, 30  # a small vocabulary: repeated words, bursts and the cap
    sizes = rng.integers(0, 60, n_images)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    words = rng.integers(0, vocab, offsets[-1])
    image = np.repeat(np.arange(n_images), sizes)
    order = np.lexsort((words, image))
    sorted_words = words[order]
    query = rng.integers(0, vocab + 5, 80)  # some words no image has
    q_sig = rng.integers(0, 1 << 32, len(query), dtype=np.uint64)
    d_sig = rng.integers(0, 1 << 32, len(words), dtype=np.uint64)
    hamming = None if hamming_threshold is None else (q_sig, d_sig, hamming_threshold)
    images = rng.permutation(n_images)[:30]
    q_idx, d_idx, starts = shortlist_matches(query, images, offsets, sorted_words, order,
                                             max_pairs_per_word=6, max_matches=25,
                                             hamming=hamming)
    capped = 0
    for j, i in enumerate(images):
        a, b = offsets[i], offsets[i + 1]
        want = tentative_matches(query, sorted_words[a:b], order[a:b], 6, 25,
                                 word_multiplicity(query), hamming)
        np.testing.assert_array_equal(q_idx[starts[j]:starts[j + 1]], want[0])
        np.testing.assert_array_equal(d_idx[starts[j]:starts[j + 1]], want[1])
        capped += len(want[0]) == 25
    assert capped >= 3 and (np.diff(starts) == 0).any()


def _prepared(name, ds, **config):
    """A verifier indexed on `ds`, and per query (words, geometry, first-stage scores,
    signatures)."""
    cls = METHODS.get(name)
    method = cls(cls.Config(**config), RunContext.in_memory(dataset_id="demo@test"))
    method.fit(ds.train)
    method.index(ds.database)
    words, offsets = method.words("queries", ds.queries)
    geometry = _geometry(method.features("queries", ds.queries))
    first = method._first_stage_scores(ds.queries, words, offsets)
    sig = (method.embedded("queries", ds.queries, words)[0]
           if method._filters_by_hamming else None)
    per_query = []
    for qi in range(len(ds.queries)):
        a, b = int(offsets[qi]), int(offsets[qi + 1])
        per_query.append((words[a:b], geometry.take(np.arange(a, b)), first[qi],
                          None if sig is None else sig[a:b]))
    return method, per_query


@pytest.mark.slow
@pytest.mark.parametrize("name", VERIFIERS)
def test_verification_at_once_ranks_as_image_by_image_on_demo(name):
    # demo: crops of real photographs pasted into cluttered scenes (SIFT matches of real
    # image content); the Hamming filter changes the matches, k < shortlist lets images be
    # pruned
    ds = _demo()
    for config in ({}, {"match_hamming_threshold": 22}):
        method, per_query = _prepared(name, ds, shortlist=12, **config)
        for words, geometry, first, sig in per_query:
            for k in (3, 12, len(first)):
                new = method.rerank_query(words, geometry, first, k, sig)
                old = method.rerank_query(words, geometry, first, k, sig, reference=True)
                np.testing.assert_array_equal(new[0], old[0])
                np.testing.assert_array_equal(new[1], old[1])
                np.testing.assert_array_equal(new[2][1], old[2][1])  # tentative matches


@pytest.mark.parametrize("name", VERIFIERS)
def test_pruning_keeps_the_top_k_on_random_matches(name):
    rng = np.random.default_rng(1)
    n_images, per_image, vocab = 100, 40, 400
    words = rng.integers(0, vocab, n_images * per_image)
    offsets = np.arange(n_images + 1) * per_image
    geometry = Geometry(*(rng.uniform(lo, hi, len(words)).astype(np.float32)
                          for lo, hi in ((0, 640), (0, 480), (0, 2 * np.pi), (2, 40))))
    first = TfIdfIndex.build(words, offsets, vocab)
    cls = METHODS.get(name)
    method = cls(cls.Config(shortlist=60), RunContext.in_memory())
    method.load_index(first, geometry, words, offsets)
    q_words = np.concatenate([words[:40], rng.integers(0, vocab, 60)])
    q_geometry = geometry.take(np.r_[np.arange(40), rng.integers(0, len(words), 60)])
    scores = first.scores(q_words, np.array([0, len(q_words)]))[0]
    pruned = []
    for k in (1, 2, 5, 20):
        new = method.rerank_query(q_words, q_geometry, scores, k)
        old = method.rerank_query(q_words, q_geometry, scores, k, reference=True)
        np.testing.assert_array_equal(new[0], old[0])
        np.testing.assert_array_equal(new[1], old[1])
        pruned.append(int(old[2][0] - new[2][0]))
    # image 0 shares 40 features with the query; at k = 1 the images verified after it
    # have fewer tentative matches than it keeps, and the rest are skipped
    assert pruned[0] > 0 and min(pruned) >= 0


@pytest.mark.slow
def test_queries_in_two_workers_rank_as_in_one():
    ds = _demo()
    cls = METHODS.get("spatial-coding")
    out = []
    for workers in (1, 2):
        method = cls(cls.Config(shortlist=10, match_hamming_threshold=22),
                     RunContext.in_memory(dataset_id="demo@test", workers=workers))
        method.fit(ds.train)
        method.index(ds.database)
        out.append((*method.query(ds.queries, 8), method.info()))
    np.testing.assert_array_equal(out[0][0], out[1][0])
    np.testing.assert_array_equal(out[0][1], out[1][1])
    assert out[0][2]["kept_matches"] == out[1][2]["kept_matches"] > 0
