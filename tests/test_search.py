import numpy as np
import pytest

from irbench.core.search import exact_search, faiss_search, l2_normalize, search
from irbench.errors import ConfigError


def brute(db, q, k):
    s = q @ db.T
    ranks = np.array([sorted(range(db.shape[0]), key=lambda j: (-s[i, j], j))[:k]
                      for i in range(q.shape[0])])
    return ranks, np.take_along_axis(s, ranks, axis=1)


@pytest.mark.parametrize("k", [1, 7, 50])
def test_exact_matches_brute_force_and_chunks(k):
    rng = np.random.default_rng(0)
    db = l2_normalize(rng.normal(size=(50, 8)))
    q = l2_normalize(rng.normal(size=(6, 8)))
    r_ref, s_ref = brute(db, q, k)
    for chunk in (7, 50, 1000):
        r, s = exact_search(db, q, k, chunk_size=chunk)
        assert r.dtype == np.int64 and s.dtype == np.float32
        np.testing.assert_array_equal(r, r_ref)
        np.testing.assert_allclose(s, s_ref, rtol=1e-5, atol=1e-6)


def test_ties_go_to_lower_index_in_every_backend():
    db = np.array([[1, 0], [0, 1], [1, 0], [1, 0], [0, 1]], np.float32)
    q = np.array([[1, 0]], np.float32)
    for backend in ("exact", "faiss"):
        r, _ = search(db, q, 4, backend=backend)
        assert r.tolist() == [[0, 2, 3, 1]], backend
    r, _ = exact_search(db, q, 2, chunk_size=2)
    assert r.tolist() == [[0, 2]]


def test_faiss_agrees_with_exact():
    rng = np.random.default_rng(1)
    db = l2_normalize(rng.normal(size=(300, 16)))
    q = l2_normalize(rng.normal(size=(10, 16)))
    np.testing.assert_array_equal(exact_search(db, q, 20)[0], faiss_search(db, q, 20)[0])


def test_unknown_backend():
    with pytest.raises(ConfigError, match="exact"):
        search(np.zeros((2, 2), np.float32), np.zeros((1, 2), np.float32), 1, backend="nope")


def planted(n=3000, d=64, nq=40, seed=0):
    """A database of random unit vectors and queries that are noisy copies of some."""
    rng = np.random.default_rng(seed)
    db = l2_normalize(rng.normal(size=(n, d)))
    targets = rng.choice(n, nq, replace=False)
    q = l2_normalize(db[targets] + 0.3 * rng.normal(size=(nq, d)) / np.sqrt(d))
    return db, q, targets


def test_search_spec_checks_its_options():
    from irbench.core.search import SearchSpec

    assert SearchSpec("exact") == "exact" and SearchSpec("exact").key() == {"search": "exact"}
    assert SearchSpec("faiss").key() == {"search": "faiss"}  # cache keys as before
    spec = SearchSpec("ivfpq", {"nprobe": "8"})
    assert spec.key()["search_options"] == {"nprobe": "8"} and "search_rules" in spec.key()
    with pytest.raises(ConfigError, match="no option nlist"):
        SearchSpec("hnsw", {"nlist": "8"})
    with pytest.raises(ConfigError, match="whole number"):
        SearchSpec("ivfpq", {"nprobe": "many"})
    with pytest.raises(ConfigError, match="flat or sq8"):
        SearchSpec("hnsw", {"storage": "pq"})
    with pytest.raises(ConfigError, match="unknown search backend"):
        SearchSpec("annoy")


@pytest.mark.parametrize("backend", ["ivfpq", "hnsw"])
def test_approximate_backends_find_the_planted_neighbours_and_report_recall(backend):
    from irbench.core.search import SearchSpec

    db, q, targets = planted()
    spec = SearchSpec(backend)
    ranks, scores = search(db, q, 100, backend=spec)
    assert ranks.shape == scores.shape == (len(q), 100) and np.isfinite(scores).all()
    assert np.mean(ranks[:, 0] == targets) >= 0.95
    rep = spec.report
    assert rep["recall_at"] == 100 and rep["recall_queries"] == len(q)
    assert 0 < rep["recall"] <= 1.0 and rep["index_bytes"] > 0
    assert rep["build_seconds"] >= 0 and rep["search_seconds"] >= 0
    exact, _ = exact_search(db, q, 100)
    found = np.mean([len(set(a) & set(e)) / 100 for a, e in zip(ranks, exact, strict=True)])
    assert rep["recall"] == pytest.approx(found)  # every query sampled: the same number


def test_ivfpq_visiting_every_list_and_reranking_everything_is_exact():
    from irbench.core.search import SearchSpec

    db, q, _ = planted(n=1000)
    spec = SearchSpec("ivfpq", {"nlist": "8", "nprobe": "8", "rerank": "1000"})
    ranks, scores = search(db, q, 20, backend=spec)
    exact_r, exact_s = exact_search(db, q, 20)
    np.testing.assert_array_equal(ranks, exact_r)
    np.testing.assert_allclose(scores, exact_s, rtol=1e-5, atol=1e-6)
    assert spec.report["recall"] == 1.0


def test_what_an_approximate_index_does_not_find_is_padding():
    from irbench.core.search import SearchSpec

    db, q, _ = planted(n=1000)
    ranks, scores = search(db, q, 1000, backend=SearchSpec("ivfpq", {"nlist": "16",
                                                                     "nprobe": "1"}))
    assert (ranks == -1).any() and np.isfinite(scores).all()
    for row in ranks:  # found items first, then only padding; no index twice
        found = row[row >= 0]
        assert (row[:len(found)] >= 0).all() and len(set(found)) == len(found)


def test_hnsw_sq8_stores_less_than_flat():
    from irbench.core.search import SearchSpec

    db, q, _ = planted(n=1000, d=256)  # vectors larger than the graph's links
    flat, sq8 = SearchSpec("hnsw"), SearchSpec("hnsw", {"storage": "sq8"})
    search(db, q, 10, backend=flat)
    search(db, q, 10, backend=sq8)
    assert sq8.report["index_bytes"] < 0.5 * flat.report["index_bytes"]
