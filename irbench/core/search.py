"""Dense top-k search: exact (chunked numpy), faiss flat, and two approximate faiss
indexes (IVF-PQ and HNSW) whose recall against exact search is measured on every run.

All return (ranks int64[nq, k], scores float32[nq, k]) best first. The exact backends
(`exact`, `faiss`) break ties by the lower database index, so they give the same
rankings on the same scores. Similarity is the inner product; on L2-normalized vectors
that is the cosine. An approximate backend may find fewer than k items for a query: the
rest of its row is -1 (padding, "not retrieved": a positive there counts as missed).

Approximate backends take options (`--search-option KEY=VALUE`, `SEARCH_OPTIONS` lists
them with their defaults) and fill `SearchSpec.report`: the options in effect, the index
bytes (faiss's serialized index), the seconds building and searching it, and recall@100 (or @k when k < 100) against exact
search on a seeded sample of at most 100 queries: the fraction of the exact top-100 the
approximate top-100 holds.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from irbench.core.cache import release_rows
from irbench.errors import ConfigError

log = logging.getLogger(__name__)

BACKENDS = ("exact", "faiss", "ivfpq", "hnsw")
"""`exact`: numpy, chunked; `faiss`: faiss IndexFlatIP (exact); `ivfpq`: faiss
IndexIVFPQ (approximate, compressed); `hnsw`: faiss IndexHNSW (approximate, graph)."""

APPROXIMATE = ("ivfpq", "hnsw")

SEARCH_OPTIONS: dict[str, dict[str, str]] = {
    "ivfpq": {
        "nlist": "inverted lists (0: 4 sqrt(n), at most a 39th of the training vectors, "
                 "so that k-means has 39 per list)",
        "m": "PQ sub-vectors, a divisor of the dimension (0: the largest divisor <= d / 8)",
        "nbits": "bits per sub-vector code (0: 8, or log2(training vectors) when there "
                 "are fewer than 256)",
        "nprobe": "lists visited per query (0: min(nlist, 32))",
        "rerank": "re-score the best R candidates by the exact inner product with the "
                  "database vectors (0: no re-ranking)",
        "train_size": "vectors the quantizers are trained on, drawn at random "
                      "(0: min(n, 256 nlist))",
    },
    "hnsw": {
        "M": "graph neighbours per node (0: 32)",
        "ef_construction": "candidate list while building (0: 40)",
        "ef_search": "candidate list while searching (0: max(128, k))",
        "storage": "flat (float32 vectors) | sq8 (8-bit scalar quantised)",
    },
}
"""Options of each approximate backend and what they mean (0: the rule given)."""

RULES_VERSION = 3
"""Version of the approximate backends' default rules (part of their cache keys: bump it
when a default changes, so that no ranking made under the old rules is reused)."""

RECALL_DEPTH = 100
RECALL_QUERIES = 100
"""recall@RECALL_DEPTH is measured on at most RECALL_QUERIES queries (seeded sample)."""


class SearchSpec(str):
    """A backend name (it *is* the string, so code comparing names keeps working) with
    its options, the device and seed, and after a search its `report`."""

    options: dict[str, str]
    device: str
    seed: int
    report: dict[str, Any]

    def __new__(cls, name: str, options: Mapping[str, Any] | None = None, *,
                device: str = "cpu", seed: int = 0) -> SearchSpec:
        if name not in BACKENDS:
            raise ConfigError(f"unknown search backend {name!r}; choose one of "
                              f"{', '.join(BACKENDS)}")
        options = {str(k): str(v) for k, v in (options or {}).items()}
        known = SEARCH_OPTIONS.get(name, {})
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ConfigError(f"search backend {name!r} has no option "
                              f"{', '.join(unknown)}; its options: "
                              f"{', '.join(known) or 'none'}")
        for key, value in options.items():
            if key != "storage" and not value.isdigit():
                raise ConfigError(f"--search-option {key}={value}: a whole number >= 0 "
                                  f"is expected")
        if options.get("storage", "flat") not in ("flat", "sq8"):
            raise ConfigError(f"--search-option storage={options['storage']}: flat or sq8")
        self = super().__new__(cls, name)
        self.options, self.device, self.seed, self.report = options, device, seed, {}
        return self

    @property
    def approximate(self) -> bool:
        return str(self) in APPROXIMATE

    def key(self) -> dict[str, Any]:
        """What of the spec changes rankings (cache keys): the name, the options given,
        and for an approximate backend the version of its default rules."""
        key: dict[str, Any] = {"search": str(self)}
        if self.options:
            key["search_options"] = dict(sorted(self.options.items()))
        if self.approximate:
            key["search_rules"] = RULES_VERSION
        return key

    def option(self, key: str) -> int:
        return int(self.options.get(key, "0"))


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


EXACT_CHUNK_BYTES = 64 << 20
"""Database bytes exact search multiplies at a time (a memory-mapped database is read, and
its pages released, a chunk at a time): the search's working memory, whatever the size
of the database."""


def exact_search(database: np.ndarray, queries: np.ndarray, k: int, *,
                 chunk_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k, over database chunks so memory stays bounded: rows of
    `EXACT_CHUNK_BYTES` by default (16,384 rows of 1,024-D, 512 of VLAD's 32,768-D)."""
    database = np.asarray(database, np.float32)
    queries = np.asarray(queries, np.float32)
    n = database.shape[0]
    if chunk_size is None:
        row = database.itemsize * int(np.prod(database.shape[1:]) or 1)
        chunk_size = max(1, min(65536, EXACT_CHUNK_BYTES // max(1, row)))
    k = min(k, n)
    if queries.shape[0] == 0 or n == 0:
        return np.zeros((queries.shape[0], k), np.int64), np.zeros((queries.shape[0], k), np.float32)
    best_r: np.ndarray | None = None
    best_s: np.ndarray | None = None
    for begin in range(0, n, chunk_size):
        sims = queries @ database[begin:begin + chunk_size].T
        release_rows(database, begin, min(n, begin + chunk_size))
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


def _divisor_at_most(d: int, limit: int) -> int:
    return max(m for m in range(1, max(1, limit) + 1) if d % m == 0)


def _sample(n: int, size: int, seed: int) -> np.ndarray:
    if size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def _ivfpq(spec: SearchSpec, database: np.ndarray, k: int):
    import faiss

    n, d = database.shape
    trainable = min(n, spec.option("train_size") or n)
    nlist = spec.option("nlist") or max(1, min(int(4 * math.sqrt(n)), trainable // 39))
    m = spec.option("m") or _divisor_at_most(d, d // 8)
    if d % m:
        raise ConfigError(f"--search-option m={m} does not divide the dimension {d}")
    train = database[_sample(n, spec.option("train_size") or min(n, 256 * nlist),
                             spec.seed)]
    nbits = spec.option("nbits") or max(1, min(8, int(math.log2(max(2, len(train))))))
    if len(train) < max(nlist, 2 ** nbits):
        raise ConfigError(f"ivfpq: {len(train)} training vectors for {nlist} lists and "
                          f"{2 ** nbits} codes per sub-vector; lower nlist / nbits or use "
                          f"--search faiss")
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFPQ(quantizer, d, nlist, m, nbits, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = spec.seed
    index.pq.cp.seed = spec.seed
    index.pq.cp.min_points_per_centroid = 1  # small databases: the sizes are chosen above
    index.train(train)
    index.add(database)
    index.nprobe = spec.option("nprobe") or min(nlist, 32)
    used = {"nlist": nlist, "m": m, "nbits": nbits, "nprobe": index.nprobe,
            "rerank": spec.option("rerank"), "train_size": len(train)}
    return index, used


def _hnsw(spec: SearchSpec, database: np.ndarray, k: int):
    import faiss

    d = database.shape[1]
    big_m = spec.option("M") or 32
    storage = spec.options.get("storage", "flat")
    if storage == "sq8":
        index = faiss.IndexHNSWSQ(d, faiss.ScalarQuantizer.QT_8bit, big_m,
                                  faiss.METRIC_INNER_PRODUCT)
        index.train(database)
    else:
        index = faiss.IndexHNSWFlat(d, big_m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = spec.option("ef_construction") or 40
    index.add(database)
    index.hnsw.efSearch = spec.option("ef_search") or max(128, k)
    used = {"M": big_m, "ef_construction": index.hnsw.efConstruction,
            "ef_search": index.hnsw.efSearch, "storage": storage}
    return index, used


def _on_device(index: Any, spec: SearchSpec) -> tuple[Any, str]:
    """The index on the GPU when the run's device is CUDA and faiss sees a GPU; else on
    the CPU, with a warning when a GPU was asked for."""
    import faiss

    if not spec.device.startswith("cuda"):
        return index, "cpu"
    if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        res = faiss.StandardGpuResources()
        return faiss.index_cpu_to_gpu(res, 0, index), "cuda"
    log.warning("--device %s: this faiss has no GPU support (README: faiss on a GPU); the "
                "%s index runs on the CPU", spec.device, spec)
    return index, "cpu"


def approximate_search(database: np.ndarray, queries: np.ndarray, k: int,
                       spec: SearchSpec) -> tuple[np.ndarray, np.ndarray]:
    """Top-k with an approximate faiss index, best first; rows padded with -1 where
    the index finds fewer than k. Fills `spec.report`."""
    import faiss

    database = np.ascontiguousarray(database, np.float32)
    queries = np.ascontiguousarray(queries, np.float32)
    n = database.shape[0]
    k = min(k, n)
    build = _ivfpq if str(spec) == "ivfpq" else _hnsw
    start = time.perf_counter()
    index, used = build(spec, database, k)
    index_bytes = int(faiss.serialize_index(index).nbytes)
    searchable, device = _on_device(index, spec)
    built = time.perf_counter()
    rerank = used.get("rerank", 0)
    depth = max(k, min(n, rerank))
    scores, ranks = searchable.search(queries, depth)
    if rerank:
        scores, ranks = _rerank(database, queries, ranks)
    ranks, scores = _finish(ranks[:, :k], scores[:, :k])
    searched = time.perf_counter()
    spec.report = {"backend": str(spec), "options": used, "index_bytes": index_bytes,
                   "device": device, "build_seconds": round(built - start, 4),
                   "search_seconds": round(searched - built, 4),
                   **measure_recall(database, queries, ranks, spec.seed)}
    return ranks, scores


def _rerank(database: np.ndarray, queries: np.ndarray, ranks: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """The candidates re-scored by the exact inner product, best first."""
    valid = ranks >= 0
    exact = np.einsum("qd,qkd->qk", queries, database[np.where(valid, ranks, 0)])
    exact = np.where(valid, exact, -np.inf).astype(np.float32)
    order = np.lexsort((np.where(valid, ranks, np.iinfo(np.int64).max), -exact), axis=1)
    return np.take_along_axis(exact, order, axis=1), np.take_along_axis(ranks, order, axis=1)


def _finish(ranks: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """-1 where nothing was found, with the lowest finite float32 as its score; ties
    broken by the lower index as the exact backends do."""
    ranks = np.asarray(ranks, np.int64)
    missing = ranks < 0
    scores = np.where(missing, np.finfo(np.float32).min, scores).astype(np.float32)
    order = np.lexsort((np.where(missing, np.iinfo(np.int64).max, ranks), -scores), axis=1)
    return np.take_along_axis(ranks, order, axis=1), np.take_along_axis(scores, order, axis=1)


def measure_recall(database: np.ndarray, queries: np.ndarray, ranks: np.ndarray,
                   seed: int = 0) -> dict[str, Any]:
    """recall@min(100, k) of `ranks` against exact search on a seeded sample of at most
    100 queries: the mean fraction of each query's exact top list found in its
    approximate one."""
    nq, k = ranks.shape
    depth = min(RECALL_DEPTH, k)
    if nq == 0 or depth == 0:
        return {"recall_at": depth, "recall": None, "recall_queries": 0}
    sample = _sample(nq, RECALL_QUERIES, seed)
    exact, _ = exact_search(database, queries[sample], depth)
    found = [len(set(a[:depth]) & set(e)) / depth
             for a, e in zip(ranks[sample], exact, strict=True)]
    return {"recall_at": depth, "recall": float(np.mean(found)),
            "recall_queries": int(len(sample))}


def search(database: np.ndarray, queries: np.ndarray, k: int, *,
           backend: str = "exact") -> tuple[np.ndarray, np.ndarray]:
    """Top-k by inner product with the named backend (see `BACKENDS`). `backend` may be
    a `SearchSpec` (options, device; its `report` is filled by approximate backends)."""
    if backend == "exact":
        return exact_search(database, queries, k)
    if backend == "faiss":
        return faiss_search(database, queries, k)
    if backend in APPROXIMATE:
        spec = backend if isinstance(backend, SearchSpec) else SearchSpec(backend)
        return approximate_search(database, queries, k, spec)
    raise ConfigError(f"unknown search backend {backend!r}; choose one of {', '.join(BACKENDS)}")
