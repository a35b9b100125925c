"""Dense top-k search: exact (chunked numpy) and faiss flat inner product.

Both return (ranks int64[nq, k], scores float32[nq, k]) best first, ties broken by the
lower database index, so the two backends give the same rankings on the same scores.
Similarity is the inner product; on L2-normalized vectors that is the cosine.
"""

from __future__ import annotations

import numpy as np

from irbench.errors import ConfigError

BACKENDS = ("exact", "faiss")


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, eps)


def topk_from_scores(scores: np.ndarray, k: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Top-k columns of each row of a score matrix, best first, ties to the lower index."""
    n = scores.shape[1]
    k = min(k, n)
    if k < n:
        # argpartition picks an arbitrary subset among tied scores at the boundary; take
        # the k-th best value and keep every column scoring at least that, then sort.
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        kth = np.take_along_axis(scores, part, axis=1).min(axis=1, keepdims=True)
        ranks = np.empty((scores.shape[0], k), np.int64)
        for i in range(scores.shape[0]):
            cand = np.flatnonzero(scores[i] >= kth[i])
            order = np.lexsort((cand, -scores[i, cand]))[:k]
            ranks[i] = cand[order]
    else:
        cols = np.broadcast_to(np.arange(n), scores.shape)
        ranks = np.lexsort((cols, -scores), axis=1)[:, :k].astype(np.int64)
    top = np.take_along_axis(scores, ranks, axis=1).astype(np.float32)
    return ranks + offset, top


def exact_search(database: np.ndarray, queries: np.ndarray, k: int, *,
                 chunk_size: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k, over database chunks so memory stays bounded."""
    database = np.asarray(database, np.float32)
    queries = np.asarray(queries, np.float32)
    n = database.shape[0]
    k = min(k, n)
    if queries.shape[0] == 0 or n == 0:
        return np.zeros((queries.shape[0], k), np.int64), np.zeros((queries.shape[0], k), np.float32)
    best_r: np.ndarray | None = None
    best_s: np.ndarray | None = None
    for begin in range(0, n, chunk_size):
        sims = queries @ database[begin:begin + chunk_size].T
        r, s = topk_from_scores(sims, k, offset=begin)
        if best_r is None:
            best_r, best_s = r, s
            continue
        r = np.concatenate([best_r, r], axis=1)
        s = np.concatenate([best_s, s], axis=1)
        order = np.lexsort((r, -s), axis=1)[:, :k]
        best_r = np.take_along_axis(r, order, axis=1)
        best_s = np.take_along_axis(s, order, axis=1)
    return best_r, best_s


def faiss_search(database: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """faiss IndexFlatIP; ties re-sorted by index to match `exact_search`."""
    import faiss

    database = np.ascontiguousarray(database, np.float32)
    queries = np.ascontiguousarray(queries, np.float32)
    k = min(k, database.shape[0])
    index = faiss.IndexFlatIP(database.shape[1])
    index.add(database)
    scores, ranks = index.search(queries, k)
    order = np.lexsort((ranks, -scores), axis=1)
    return (np.take_along_axis(ranks, order, axis=1).astype(np.int64),
            np.take_along_axis(scores, order, axis=1).astype(np.float32))


def search(database: np.ndarray, queries: np.ndarray, k: int, *,
           backend: str = "exact") -> tuple[np.ndarray, np.ndarray]:
    """Top-k by inner product with the named backend (`exact` or `faiss`)."""
    if backend == "exact":
        return exact_search(database, queries, k)
    if backend == "faiss":
        return faiss_search(database, queries, k)
    raise ConfigError(f"unknown search backend {backend!r}; choose one of {', '.join(BACKENDS)}")
