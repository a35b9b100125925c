"""`vlad-intra`'s optional PCA-whitening: the learned PCA against an SVD reference, the
projection, its cache stage and key, and config validation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from irbench.core.cache import Cache
from irbench.datasets.registry import load_dataset
from irbench.errors import ConfigError
from irbench.methods.base import RunContext
from irbench.methods.sift.vlad import VladConfig, VladIntraMethod, learn_pca

FAST = {"vocabulary_size": 16, "kmeans_iterations": 4, "max_keypoints": 200}
DEMO_OPTIONS = {"objects": 4, "distractors": 2, "database_views": 3}  # 12 train images


def anisotropic(n: int, d: int, seed: int = 0) -> np.ndarray:
    """n unit vectors of dimension d with decreasing variance along the axes, an offset
    mean and a few all-zero rows (images without features)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * np.linspace(3.0, 0.2, d) + rng.normal(size=d)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


# -- the PCA ------------------------------------------------------------------------------


@pytest.mark.parametrize("n,d", [(30, 80), (200, 24)])  # Gram (n < D) and covariance paths
def test_learned_pca_matches_svd(n, d):
    x = anisotropic(n, d)
    pca = learn_pca(x, 6)
    centred = x.astype(np.float64) - x.mean(axis=0, dtype=np.float64)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(pca.eigenvalues, s[:6] ** 2 / (n - 1), rtol=1e-6)
    np.testing.assert_allclose(pca.total_variance, (s ** 2).sum() / (n - 1), rtol=1e-6)
    np.testing.assert_allclose(pca.components @ pca.components.T, np.eye(6), atol=1e-5)
    np.testing.assert_allclose(np.abs(pca.components @ vt[:6].T), np.eye(6), atol=1e-4)
    np.testing.assert_allclose(pca.mean, x.mean(axis=0), atol=1e-6)
    assert pca.dim == 6 and 0 < pca.explained_variance < 1
    # the sign is fixed: each component's largest-magnitude entry is positive
    rows = np.arange(6)
    assert (pca.components[rows, np.abs(pca.components).argmax(axis=1)] > 0).all()


@pytest.mark.parametrize("whiten", [True, False])
def test_projection_has_the_requested_dimension_and_unit_norm(whiten):
    x = anisotropic(40, 64)
    pca = learn_pca(x, 10)
    x[[3, 17]] = 0.0  # images without features
    y = pca.project(x, whiten=whiten)
    assert y.shape == (40, 10) and y.dtype == np.float32
    norms = np.linalg.norm(y, axis=1)
    np.testing.assert_allclose(np.delete(norms, [3, 17]), 1.0, atol=1e-5)
    assert (y[[3, 17]] == 0).all()  # not centred: an empty image still scores 0
    # projected in small batches: the same vectors
    np.testing.assert_allclose(pca.project(x, whiten=whiten, batch_rows=7), y, atol=1e-6)


def test_whitening_gives_identity_covariance_on_the_training_vectors():
    x = anisotropic(120, 48, seed=3)
    pca = learn_pca(x, 12)
    white = pca.project(x, whiten=True, normalize=False)
    np.testing.assert_allclose(np.cov(white.T.astype(np.float64)), np.eye(12), atol=1e-4)
    plain = pca.project(x, whiten=False, normalize=False)
    cov = np.cov(plain.T.astype(np.float64))
    np.testing.assert_allclose(np.diag(cov), pca.eigenvalues, rtol=1e-4)
    np.testing.assert_allclose(cov - np.diag(np.diag(cov)), 0, atol=1e-6)


def test_learn_pca_refuses_impossible_dimensions():
    x = anisotropic(10, 32)
    learn_pca(x, 9)  # n - 1: the most centring leaves
    for dim in (0, 10, 33):
        with pytest.raises(ConfigError, match=r"min\(n - 1, D\) = 9"):
            learn_pca(x, dim)
    with pytest.raises(ConfigError, match=r"min\(n - 1, D\) = 8"):
        learn_pca(anisotropic(50, 8), 9)
    # vectors spanning fewer directions than asked for: refused, not whitened into noise
    flat = np.repeat(anisotropic(4, 32), 5, axis=0)  # 20 vectors, 3 directions after centring
    with pytest.raises(ConfigError, match="span only 3 directions"):
        learn_pca(flat, 5)


# -- config -------------------------------------------------------------------------------


def test_config_defaults_and_validation():
    cfg = VladConfig()
    assert cfg.power_normalization == 1.0 and cfg.intra_normalization is True
    assert cfg.pca_dim == 0 and cfg.pca_whitening is True
    with pytest.raises(ConfigError, match="pca_dim"):
        VladIntraMethod(VladConfig(pca_dim=-1))
    with pytest.raises(ConfigError, match=r"pca_dim=513 exceeds the VLAD dimension 512"):
        VladIntraMethod(VladConfig(vocabulary_size=4, pca_dim=513))
    VladIntraMethod(VladConfig(vocabulary_size=4, pca_dim=512))
    with pytest.raises(ConfigError, match="vocabulary_size"):
        VladIntraMethod(VladConfig(vocabulary_size=0))
    # the stages: the PCA comes after the vectors; whitening enters no artifact key
    method = VladIntraMethod(VladConfig(pca_dim=8))
    assert method.upstream("pca")[-2:] == ("vlad", "pca")
    assert "pca_dim" in method.stage_fields("pca")
    assert "pca_dim" not in method.stage_fields("vlad")
    assert "pca_whitening" not in method.stage_fields("pca")


# -- the method on demo -------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return load_dataset("demo", cache_dir=tmp_path_factory.mktemp("demo"), options=DEMO_OPTIONS)


def fitted(ds, cache: Cache, seed: int = 0, **overrides) -> VladIntraMethod:
    ctx = RunContext(cache=cache, workers=1, seed=seed, dataset_id=f"{ds.name}@{ds.version}")
    method = VladIntraMethod(dataclasses.replace(VladConfig(**FAST), **overrides), ctx)
    method.fit(ds.train)
    return method


def events(method: VladIntraMethod, kind: str) -> list:
    return [e for e in method.context.cache.events if e.kind == kind]


def test_pca_through_the_method(demo, tmp_path):
    assert len(demo.train) == 12
    method = fitted(demo, Cache(tmp_path), pca_dim=8)
    method.index(demo.database)
    ranks, scores = method.query(demo.queries, len(demo.database))
    db = method._database
    assert db.shape == (len(demo.database), 8)
    np.testing.assert_allclose(np.linalg.norm(db, axis=1), 1, atol=1e-5)
    assert ranks.shape == (len(demo.queries), len(demo.database)) and np.isfinite(scores).all()
    info = method.info()
    assert info["vocabulary_trained_on"] == info["pca_trained_on"] == "train"
    assert info["pca_training_images"] == 12 and info["pca_training_vectors"] <= 12
    assert info["vlad_dimension"] == 16 * 128 and info["output_dimension"] == 8
    assert info["pca_dim"] == 8 and info["pca_whitening"] is True
    assert 0 < info["pca_explained_variance"] <= 1
    assert info["normalization_order"] == ("residual sums > intra L2 > global L2 > PCA 8 > "
                                           "whitening > L2")
    assert method.index_bytes() == len(demo.database) * 8 * 4
    # the train split's VLAD vectors were computed (for the PCA) and the PCA stored
    assert [e.hit for e in events(method, "vlad-intra/pca")] == [False]
    assert len(events(method, "vlad-intra/vlad")) == 3  # train, database, queries
    # the database vectors are the PCA of the D-dimensional ones
    full, _ = method.vlad_vectors("database", demo.database)
    np.testing.assert_allclose(method._pca.project(full, whiten=True), db, atol=1e-5)

    # the same run again: every artifact reused; whitening off reuses the PCA too
    again = fitted(demo, Cache(tmp_path), pca_dim=8)
    again.index(demo.database)
    assert all(e.hit for e in again.context.cache.events)
    np.testing.assert_array_equal(again._database, db)
    plain = fitted(demo, Cache(tmp_path), pca_dim=8, pca_whitening=False)
    plain.index(demo.database)
    assert [e.hit for e in events(plain, "vlad-intra/pca")] == [True]
    assert not np.allclose(plain._database, db)
    assert "whitening" not in plain.info()["normalization_order"]
    # another dimension: a new PCA, the same VLAD vectors
    other = fitted(demo, Cache(tmp_path), pca_dim=4)
    other.index(demo.database)
    assert [e.hit for e in events(other, "vlad-intra/pca")] == [False]
    assert all(e.hit for e in events(other, "vlad-intra/vlad"))


def test_a_changed_vocabulary_changes_the_pca_key(demo, tmp_path):
    first = fitted(demo, Cache(tmp_path), pca_dim=6)
    first.ensure_pca()
    key = events(first, "vlad-intra/pca")[0].key
    _, spec = first.stage_key("pca", {"vocabulary": first._vocabulary_id,
                                      "images": first.context.identify(demo.train)})
    assert spec["inputs"]["vocabulary"] == first._vocabulary_id
    # the same fields and seed, another vocabulary artifact: a new PCA, never the old one
    stale = fitted(demo, Cache(tmp_path), pca_dim=6)
    stale._vocabulary_id = "another-vocabulary"
    stale.ensure_pca()
    (event,) = events(stale, "vlad-intra/pca")
    assert not event.hit and event.key != key
    # another seed retrains the vocabulary, hence the PCA
    reseeded = fitted(demo, Cache(tmp_path), seed=1, pca_dim=6)
    reseeded.ensure_pca()
    assert reseeded._vocabulary_id != first._vocabulary_id
    (event,) = events(reseeded, "vlad-intra/pca")
    assert not event.hit and event.key != key
    # other training images (same vocabulary id): another key as well
    _, other = first.stage_key("pca", {"vocabulary": first._vocabulary_id,
                                       "images": first.context.identify(demo.train[:-1])})
    assert other != spec


def test_pca_dim_beyond_the_training_vectors_is_a_config_error(demo, tmp_path):
    method = fitted(demo, Cache(tmp_path), pca_dim=12)  # 12 train images: at most 11
    with pytest.raises(ConfigError, match=r"train, 12 images\): pca_dim=12 exceeds "
                                          r"min\(n - 1, D\) = 11"):
        method.index(demo.database)
    assert not events(method, "vlad-intra/vlad")  # refused before computing any vector
