import numpy as np
import pytest

from irbench.errors import ConfigError
from irbench.harness.search import exact_search, faiss_search, l2_normalize, search


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
