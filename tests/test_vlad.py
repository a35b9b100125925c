"""The `vlad-intra` method: the encoding against a loop reference, its normalizations, and
runs on a tiny demo set."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from irbench.core.cache import Cache
from irbench.datasets.base import Image, Query
from irbench.datasets.registry import load_dataset
from irbench.errors import ConfigError
from irbench.harness.runner import RunOptions, run
from irbench.methods.base import RunContext
from irbench.methods.registry import METHODS
from irbench.methods.sift.vlad import (
    VladConfig,
    VladIntraMethod,
    aggregate_residuals,
    image_batches,
    normalize_vlad,
    vlad_encode,
)

FAST = {"vocabulary_size": 32, "kmeans_iterations": 8, "max_keypoints": 300}
DEMO_OPTIONS = {"objects": 4, "distractors": 4, "database_views": 4}

# -- the encoding -------------------------------------------------------------------------


def reference_vlad(vectors, words, offsets, centroids, power, intra):
    """Per-descriptor Python loop, float64: residual sums, power, intra, global L2."""
    k, d = centroids.shape
    rows = []
    for j in range(len(offsets) - 1):
        v = np.zeros((k, d))
        for f in range(offsets[j], offsets[j + 1]):
            w = int(words[f])
            v[w] += vectors[f].astype(np.float64) - centroids[w]
        v = np.sign(v) * np.abs(v) ** power
        if intra:
            for i in range(k):
                norm = np.linalg.norm(v[i])
                if norm > 0:
                    v[i] /= norm
        v = v.ravel()
        norm = np.linalg.norm(v)
        rows.append(v / norm if norm > 0 else v)
    return np.array(rows)


def random_case(seed: int, n_images: int = 7, k: int = 5, d: int = 6, empty=(2,)):
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 30, n_images)
    counts[list(empty)] = 0
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    vectors = rng.normal(size=(int(offsets[-1]), d)).astype(np.float32)
    centroids = rng.normal(size=(k, d)).astype(np.float32)
    words = rng.integers(0, k - 1, int(offsets[-1])).astype(np.uint32)  # word k-1 never used
    return vectors, words, offsets, centroids


@pytest.mark.parametrize("power,intra", [(0.5, True), (1.0, True), (0.5, False),
                                         (1.0, False), (0.3, True)])
def test_encoding_matches_loop_reference(power, intra):
    vectors, words, offsets, centroids = random_case(0)
    got = vlad_encode(vectors, words, offsets, centroids, power=power, intra=intra)
    assert got.dtype == np.float32 and got.shape == (7, 5 * 6)
    ref = reference_vlad(vectors, words, offsets, centroids, power, intra)
    np.testing.assert_allclose(got, ref, atol=2e-6)


def test_residual_sums_match_loop():
    vectors, words, offsets, centroids = random_case(1)
    got = aggregate_residuals(vectors, words, offsets, centroids)
    ref = np.zeros_like(got, dtype=np.float64)
    for j in range(len(offsets) - 1):
        for f in range(offsets[j], offsets[j + 1]):
            ref[j, words[f]] += vectors[f] - centroids[words[f]]
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert (got[:, -1] == 0).all()  # an unused word: zero block


def test_hand_made_two_words():
    centroids = np.array([[0.0, 0.0], [10.0, 0.0]], np.float32)
    vectors = np.array([[1, 2], [3, -2], [11, 4], [0, 1]], np.float32)
    words = np.array([0, 0, 1, 0])
    offsets = np.array([0, 3, 4])
    raw = aggregate_residuals(vectors, words, offsets, centroids)
    np.testing.assert_array_equal(raw[0], [[4, 0], [1, 4]])
    np.testing.assert_array_equal(raw[1], [[0, 1], [0, 0]])
    # no power, no intra: plain L2 of [4, 0, 1, 4]
    plain = vlad_encode(vectors, words, offsets, centroids, power=1.0, intra=False)
    np.testing.assert_allclose(plain[0], np.array([4, 0, 1, 4]) / np.sqrt(33), rtol=1e-6)
    # intra: blocks [1, 0] and [1/sqrt 17, 4/sqrt 17], each weighted 1/sqrt 2
    intra = vlad_encode(vectors, words, offsets, centroids, power=1.0, intra=True)
    np.testing.assert_allclose(
        intra[0], np.array([1, 0, 1 / np.sqrt(17), 4 / np.sqrt(17)]) / np.sqrt(2), rtol=1e-6)
    # signed square root before the intra L2: [2, 0] -> [1, 0]; [1, 4] -> [1, 2] / sqrt 5
    ssr = vlad_encode(vectors, words, offsets, centroids, power=0.5, intra=True)
    np.testing.assert_allclose(
        ssr[0], np.array([1, 0, 1 / np.sqrt(5), 2 / np.sqrt(5)]) / np.sqrt(2), rtol=1e-6)
    np.testing.assert_allclose(ssr[1], [0, 1, 0, 0], atol=1e-7)


def test_intra_normalization_makes_blocks_equal():
    """After intra-normalization every non-empty block is unit-norm, so after the global
    L2 each has norm 1/sqrt(#non-empty blocks), however bursty; empty blocks stay zero."""
    vectors, words, offsets, centroids = random_case(2, k=6, d=8)
    vectors[offsets[0]:offsets[1]] *= np.linspace(1, 50, offsets[1] - offsets[0])[:, None]
    for power in (0.5, 1.0):
        v = vlad_encode(vectors, words, offsets, centroids, power=power, intra=True)
        blocks = np.linalg.norm(v.reshape(len(v), 6, 8), axis=2)
        for j in range(len(v)):
            used = np.unique(words[offsets[j]:offsets[j + 1]])
            expected = np.zeros(6)
            expected[used] = 1 / np.sqrt(len(used)) if len(used) else 0.0
            np.testing.assert_allclose(blocks[j], expected, atol=1e-6)
        raw = aggregate_residuals(vectors, words, offsets, centroids)
        pre = normalize_vlad(raw, power=power, intra=True)
        assert pre.shape == v.shape
    # without intra-normalization the bursty image's blocks are unequal
    plain = vlad_encode(vectors, words, offsets, centroids, power=1.0, intra=False)
    b0 = np.linalg.norm(plain[0].reshape(6, 8), axis=1)
    assert b0[b0 > 0].max() > 1.5 * b0[b0 > 0].min()


def test_image_without_features_is_zero():
    vectors, words, offsets, centroids = random_case(3, empty=(0, 4))
    for power, intra in ((0.5, True), (1.0, False)):
        v = vlad_encode(vectors, words, offsets, centroids, power=power, intra=intra)
        assert (v[[0, 4]] == 0).all()
        np.testing.assert_allclose(np.linalg.norm(np.delete(v, [0, 4], 0), axis=1), 1, atol=1e-6)
    none = vlad_encode(np.zeros((0, 6), np.float32), np.zeros(0, np.uint32),
                       np.zeros(3, np.int64), centroids)
    assert none.shape == (2, 30) and (none == 0).all()


def test_image_batches_cover_and_bound():
    counts = np.array([5, 0, 40, 3, 3, 0, 0, 7, 1, 50])
    offsets = np.concatenate([[0], np.cumsum(counts)])
    for max_features, max_images in ((10, 100), (1, 1), (1000, 3), (45, 4)):
        batches = list(image_batches(offsets, max_features, max_images))
        assert batches[0][0] == 0 and batches[-1][1] == len(counts)
        assert all(a[1] == b[0] for a, b in zip(batches, batches[1:], strict=False))
        for b, e in batches:
            assert 1 <= e - b <= max_images
            assert offsets[e] - offsets[b] <= max_features or e - b == 1
    assert list(image_batches(np.zeros(1, np.int64), 10, 10)) == []


def test_config_defaults_and_validation():
    cfg = VladConfig()
    assert cfg.vocabulary_size == 256 and cfg.rootsift
    # All about VLAD: intra-normalization in place of the signed square root (an option)
    assert cfg.intra_normalization is True and cfg.power_normalization == 1.0
    assert cfg.pca_dim == 0 and cfg.pca_whitening is True
    assert METHODS.get("vlad-intra") is VladIntraMethod
    with pytest.raises(ConfigError):
        VladIntraMethod(VladConfig(power_normalization=0.0))
    with pytest.raises(ConfigError):
        VladIntraMethod(VladConfig(power_normalization=1.5))


# -- the method on demo -------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return load_dataset("demo", cache_dir=tmp_path_factory.mktemp("demo"), options=DEMO_OPTIONS)


def run_method(ds, cache_dir: Path, **overrides):
    ctx = RunContext(cache=Cache(cache_dir), workers=1, dataset_id=f"{ds.name}@{ds.version}")
    method = VladIntraMethod(dataclasses.replace(VladConfig(**FAST), **overrides), ctx)
    method.fit(ds.train)
    method.index(ds.database)
    ranks, scores = method.query(ds.queries, len(ds.database))
    return method, ranks, scores


def test_end_to_end_on_demo(tmp_path):
    options = RunOptions(cache_dir=tmp_path / "cache", results_dir=None, workers=1,
                         dataset_options=DEMO_OPTIONS)
    record = run("vlad-intra", "demo", options, overrides=FAST)
    ds = load_dataset("demo", cache_dir=tmp_path / "cache", options=DEMO_OPTIONS)
    chance = np.mean([len(t["positives"]) / len(ds.database) for t in ds.ground_truth])
    m = record.metrics["settings"][""]["map"]
    assert np.isfinite(m) and m > 2 * chance
    info = record.method_info
    assert info["vocabulary_trained_on"] == "train" and info["vocabulary_size"] == 32
    assert info["vlad_dimension"] == 32 * 128
    assert info["output_dimension"] == 32 * 128 and "pca_trained_on" not in info
    assert info["normalization_order"] == "residual sums > intra L2 > global L2"
    assert record.index_bytes == len(ds.database) * 32 * 128 * 4


def test_method_vectors_match_direct_encoding_and_batches(demo, tmp_path):
    method, ranks, scores = run_method(demo, tmp_path / "a")
    db = method._database
    np.testing.assert_allclose(np.linalg.norm(db, axis=1), 1, atol=1e-5)
    feats = method.features("database", demo.database)
    words, offsets = method.words("database", demo.database)
    direct = vlad_encode(method.vectors(feats.descriptors), words, offsets,
                         method._vocabulary.centroids, power=1.0, intra=True)
    np.testing.assert_allclose(db, direct, atol=1e-6)
    # tiny batches (many per image list, single images over the feature budget) agree
    small = VladIntraMethod(method.config, RunContext(
        cache=Cache(tmp_path / "b"), workers=1, dataset_id=method.context.dataset_id))
    small.batch_features, small.batch_bytes = 50, 3 * 4 * db.shape[1]
    small.fit(demo.train)
    small.index(demo.database)
    np.testing.assert_allclose(small._database, db, atol=1e-6)
    np.testing.assert_array_equal(small.query(demo.queries, len(demo.database))[0], ranks)


def test_deterministic_and_cached(demo, tmp_path):
    m1, r1, s1 = run_method(demo, tmp_path / "c1")
    _, r2, s2 = run_method(demo, tmp_path / "c2")  # fresh cache: recomputed
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_array_equal(s1, s2)
    m3, r3, s3 = run_method(demo, tmp_path / "c1")  # same cache: every stage reused
    assert all(e.hit for e in m3.context.cache.events)
    assert [e.kind for e in m3.context.cache.events].count("vlad-intra/vlad") == 2
    np.testing.assert_array_equal(r1, r3)
    np.testing.assert_array_equal(s1, s3)
    # another normalization reuses the vocabulary and the words, recomputes the vectors
    m4, _, _ = run_method(demo, tmp_path / "c1", power_normalization=0.5)
    events = {(e.kind, e.hit) for e in m4.context.cache.events}
    assert ("vocabulary", True) in events and ("words", True) in events
    assert ("vlad-intra/vlad", False) in events


def test_images_without_features_through_the_method(demo, tmp_path):
    flat = tmp_path / "flat.png"
    assert cv2.imwrite(str(flat), np.full((64, 64, 3), 128, np.uint8))
    ctx = RunContext(cache=Cache(tmp_path / "cache"), workers=1, dataset_id="demo-flat@1")
    method = VladIntraMethod(VladConfig(**FAST), ctx)
    method.fit(demo.train)
    database = [*demo.database, Image("flat-db", flat)]
    method.index(database)
    assert (method._database[-1] == 0).all()
    assert method.info()["images_without_features"] == 1
    queries = [Query("flat-q", flat), *demo.queries[:2]]
    ranks, scores = method.query(queries, len(database))
    assert method.info()["queries_without_features"] == 1
    np.testing.assert_array_equal(ranks[0], np.arange(len(database)))  # ties: lower index
    assert (scores[0] == 0).all()
    for r, s in zip(ranks[1:], scores[1:], strict=True):  # the flat image scores 0
        assert s[list(r).index(len(database) - 1)] == 0
