"""Visual vocabulary: k-means on local descriptors (exact, or with approximate nearest-
centroid assignment for large vocabularies), hard assignment, and vocabulary files.

Which images train the vocabulary is `vocabulary_source`: by default ('auto') the
dataset's customary independent set when it declares one (`Dataset.independent_set`:
Paris6k for Oxford5k and vice versa, as in Philbin et al. 2007 and Jégou et al. 2008),
else its train split, else its database (the common practice when no separate set is
given); or 'train', 'database', the name of any installed dataset (its database is used:
an independent vocabulary for `folder:`, `manifest:` or INSTRE-S data), or
`file:PATH`, a vocabulary file (`save_vocabulary` / `load_vocabulary_file`: float32
centroids in the space of the method's descriptors). The run record says which
(`info()["vocabulary_trained_on"]`) and whether the vocabulary was computed or reused
from the cache (`vocabulary_reused`, `vocabulary_id`).

Size. `vocabulary_size` = 20,000 words by default, the size the HE+WGC papers' lineage
uses ("codebook size is set to 20k", following Jégou et al. 2008, in L. Zheng's public
re-implementation of HE; the ECCV 2008 text itself could not be read here); Philbin et
al. 2007 use 1M words on Oxford, reachable with `--set vocabulary_size=1000000` and
approximate assignment. Every vocabulary-based SIFT method shares this default, so one
vocabulary serves `bow`, `he-wgc` and the verifiers on a dataset; `vlad-intra` asks for
its own 256 words.

Training sample. k-means runs on a seeded random subsample of
`training_descriptors_per_word` × size descriptors (40 by default: faiss asks for at
least 39 points per centroid; 0 = every descriptor), so the sample grows with the
vocabulary. When the training images have fewer than `min_descriptors_per_word` × size
descriptors (5 by default: below a handful of points per centroid the "words" are single
descriptors), the vocabulary is shrunk to ⌊descriptors / min_descriptors_per_word⌋ words,
with a warning in the log, and the record keeps both numbers
(`vocabulary_size_requested`, `vocabulary_size`): never a silent cap.

Assignment (training and quantization alike, `kmeans_assignment`): 'exact' is faiss's
flat L2 search; 'hnsw' assigns to the nearest centroid through a faiss HNSW graph of the
centroids (M = 32 links, efConstruction = 40, efSearch = 64; rebuilt at every Lloyd
iteration), which makes 20,000 to 1,000,000 words affordable on a workstation (Philbin
et al.'s approximate k-means uses randomized k-d trees for the same purpose); 'auto'
(default) is exact up to 4,096 words and HNSW above. `benchmarks/bench_vocabulary.py`
prints the time of both and how often HNSW finds the exact nearest centroid.

Sivic & Zisserman, "Video Google", ICCV 2003 (k-means vocabulary of SIFT); Philbin et
al., "Object retrieval with large vocabularies and fast spatial matching", CVPR 2007
(approximate k-means, large vocabularies).
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from irbench.core.cache import iter_blocks
from irbench.core.config import param
from irbench.errors import ConfigError
from irbench.methods.sift.keypoints import FEATURE_BLOCK

log = logging.getLogger(__name__)

__all__ = [
    "VocabularyOptions",
    "VOCABULARY_STAGE",
    "DEFAULT_VOCABULARY_SIZE",
    "HNSW_ABOVE",
    "resolve_vocabulary_size",
    "training_sample_size",
    "sample_indices",
    "train_kmeans",
    "Vocabulary",
    "FILE_PREFIX",
    "save_vocabulary",
    "load_vocabulary_file",
]

DEFAULT_VOCABULARY_SIZE = 20_000
HNSW_ABOVE = 4096
"""'auto' assignment: exact up to this many words, HNSW above."""
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 40
HNSW_EF_SEARCH = 64
FILE_PREFIX = "file:"


VOCABULARY_STAGE = "vocabulary"
"""The cached stage of vocabulary training (after SIFT extraction; seeded)."""


@dataclass(frozen=True)
class VocabularyOptions:
    """Config fields of the visual vocabulary; method configs inherit them."""

    vocabulary_size: int = param(
        DEFAULT_VOCABULARY_SIZE,
        "number of visual words (20,000: the HE+WGC lineage; Philbin et al. 2007 use 1M); "
        "shrunk, with a warning and both sizes recorded, when the training set has fewer "
        "than min_descriptors_per_word descriptors per word",
        minimum=1, stage=VOCABULARY_STAGE)
    kmeans_iterations: int = param(20, "k-means (Lloyd) iterations of vocabulary training",
                                   minimum=1, stage=VOCABULARY_STAGE)
    kmeans_assignment: str = param(
        "auto", "nearest-centroid search in k-means training and quantization: 'exact' "
                "(flat L2), 'hnsw' (approximate, faiss HNSW over the centroids), 'auto' = "
                "exact up to 4,096 words, hnsw above",
        choices=("auto", "exact", "hnsw"), stage=VOCABULARY_STAGE)
    training_descriptors_per_word: int = param(
        40, "train k-means on a seeded random subsample of this many descriptors per word "
            "(0 = every descriptor of the training images)", minimum=0,
        stage=VOCABULARY_STAGE)
    min_descriptors_per_word: int = param(
        5, "fewer training descriptors than this per word shrinks the vocabulary to "
           "descriptors / this (logged as a warning, recorded)", minimum=1,
        stage=VOCABULARY_STAGE)
    vocabulary_source: str = param(
        "auto", "what the vocabulary is trained on: 'auto' = the dataset's customary "
                "independent set if it declares one (Paris for Oxford and vice versa), else "
                "its train split, else its database; 'train', 'database', the name of an "
                "installed dataset whose database is used, or file:PATH (a vocabulary file)",
        stage=VOCABULARY_STAGE)


def resolve_vocabulary_size(requested: int, n_descriptors: int, min_per_word: int = 1
                            ) -> int:
    """The vocabulary size to train on `n_descriptors` descriptors: `requested`, or
    ⌊n / min_per_word⌋ (at least 1) when there are fewer than `min_per_word` per word."""
    if n_descriptors < 1:
        raise ConfigError("cannot train a visual vocabulary: the training images have no "
                          "SIFT keypoints at all")
    if requested < 1:
        raise ConfigError(f"vocabulary_size must be >= 1, got {requested}")
    if requested * max(1, min_per_word) <= n_descriptors:
        return int(requested)
    return max(1, n_descriptors // max(1, min_per_word))


def training_sample_size(size: int, per_word: int, n_descriptors: int) -> int:
    """How many descriptors train a vocabulary of `size` words: per_word × size (0 = all),
    at most the `n_descriptors` available."""
    if per_word <= 0:
        return int(n_descriptors)
    return int(min(n_descriptors, per_word * size))


def use_hnsw(assignment: str, size: int) -> bool:
    """Whether `assignment` ('auto', 'exact', 'hnsw') searches `size` centroids by HNSW."""
    return assignment == "hnsw" or (assignment == "auto" and size > HNSW_ABOVE)


def sample_indices(n_total: int, cap: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random subsample of at most `cap` of `n_total` rows
    (all rows when cap is 0 or n_total <= cap)."""
    if cap <= 0 or n_total <= cap:
        return np.arange(n_total, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_total, size=cap, replace=False)).astype(np.int64)


def _hnsw_index(d: int):
    import faiss

    index = faiss.IndexHNSWFlat(d, HNSW_M)
    index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    index.hnsw.efSearch = HNSW_EF_SEARCH
    return index


def train_kmeans(vectors: np.ndarray, k: int, *, niter: int, seed: int,
                 hnsw: bool = False, progress: Callable[[int], None] | None = None
                 ) -> np.ndarray:
    """faiss k-means centroids float32[k, d] of `vectors` (all of them are used); `hnsw`
    assigns points to centroids through an HNSW graph of the centroids (approximate).

    faiss runs one Lloyd iteration per call, each starting from the centroids the last
    one left (`Clustering` takes centroids already present as its initialisation), so
    that `progress` can be called with 1 after every iteration (with the iterations
    left when k-means has converged). The centroids are those of one faiss call of
    `niter` iterations, bit for bit (tests/test_bow.py): the calls after the first
    repeat only what one call does between two iterations, its early stop is repeated
    (recent faiss versions stop once the objective is unchanged), and the generator
    that draws the levels of the HNSW graph's nodes is set to where one call would have
    it. The cost: every call adds the centroids to its index again, which for HNSW is a
    second graph per iteration (measured: 2.6% of an iteration at 20,000 words, 5% at
    4,096); nothing measurable for exact assignment.
    """
    import faiss

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = x.shape
    if not 1 <= k <= n:
        raise ConfigError(f"cannot train {k} visual words on {n} descriptors")
    clustering = faiss.Clustering(d, int(k))
    clustering.niter = 1
    clustering.seed = int(seed) % (2**31)
    clustering.verbose = False
    # use every vector given (the subsample is ours and recorded), no faiss resampling
    clustering.max_points_per_centroid = max(256, -(-n // k) + 1)
    clustering.min_points_per_centroid = 1
    stops_early = _faiss_stops_early()
    index = _hnsw_index(d) if hnsw else faiss.IndexFlatL2(d)
    levels = None
    if hnsw:
        # One call adds the centroids to the graph before its first iteration and after
        # each one, drawing a level per node from the graph's generator; a call per
        # iteration adds them once more at its start. So before each later call the
        # generator is set k draws on from where it was before the previous one, the
        # draws made by a scratch graph's `prepare_level_tab` (one draw per node).
        levels = faiss.HNSW(2)
        levels.rng = index.hnsw.rng  # a copy
    for iteration in range(niter):
        if levels is not None and iteration:
            levels.reset()
            levels.prepare_level_tab(int(k), False)
            index.hnsw.rng = levels.rng
        clustering.train(x, index)
        converged = stops_early and _objective_unchanged(clustering.iteration_stats)
        if progress is not None:
            progress(niter - iteration if converged else 1)
        if converged:
            break
    return np.ascontiguousarray(faiss.vector_to_array(clustering.centroids),
                                dtype=np.float32).reshape(k, d)


@functools.cache
def _faiss_stops_early() -> bool:
    """Whether this faiss's k-means stops before its `niter` iterations once the objective
    is unchanged (`early_stop_threshold` = 0 in recent versions; older ones run them
    all): one centroid of two points is unchanged from the second iteration on."""
    import faiss

    clustering = faiss.Clustering(1, 1)
    clustering.niter = 5
    clustering.verbose = False
    clustering.min_points_per_centroid = 1
    clustering.train(np.array([[0.0], [1.0]], np.float32), faiss.IndexFlatL2(1))
    return clustering.iteration_stats.size() < clustering.niter


def _objective_unchanged(stats: Any) -> bool:
    """Whether the last two of faiss's per-iteration statistics have the same objective
    (where one faiss call of several iterations stops)."""
    last = stats.size() - 1
    return last >= 1 and stats.at(last).obj == stats.at(last - 1).obj


@dataclass
class Vocabulary:
    """A trained vocabulary: centroids float32[V, d]; hard assignment by `quantize`,
    exact or through an HNSW graph of the centroids (`hnsw`, as in training)."""

    centroids: np.ndarray
    hnsw: bool = False

    def __post_init__(self) -> None:
        self.centroids = np.ascontiguousarray(self.centroids, dtype=np.float32)
        self._index = None

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without its faiss index (it does not pickle; rebuilt on first use), so
        that quantization can run as an executor's task elsewhere."""
        return {**self.__dict__, "_index": None}

    @property
    def size(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    def _faiss_index(self):
        if self._index is None:
            import faiss

            self._index = _hnsw_index(self.dim) if self.hnsw else faiss.IndexFlatL2(self.dim)
            self._index.add(self.centroids)
        return self._index

    def quantize(self, descriptors: np.ndarray, *,
                 prepare: Callable[[np.ndarray], np.ndarray] | None = None,
                 batch_size: int = FEATURE_BLOCK) -> np.ndarray:
        """Nearest-centroid word id of each row, uint32[n]. `prepare` maps a batch of
        stored descriptors to the float32 vectors the vocabulary was trained on. The rows
        are read a batch at a time (`iter_blocks`), so memory-mapped descriptors are never
        all resident."""
        n = int(descriptors.shape[0])
        words = np.empty(n, np.uint32)
        index = self._faiss_index()
        for begin, batch in zip(range(0, n, batch_size), iter_blocks(descriptors, batch_size),
                                strict=True):
            x = prepare(batch) if prepare is not None else batch
            x = np.ascontiguousarray(x, dtype=np.float32)
            _, ids = index.search(x, 1)
            words[begin:begin + len(x)] = ids[:, 0].astype(np.uint32)
        return words


def save_vocabulary(path: str | Path, centroids: np.ndarray) -> None:
    """Write a vocabulary file: float32[V, d] centroids as `.npy` (atomically)."""
    from irbench.core.cache import atomic_writer

    c = np.ascontiguousarray(centroids, dtype=np.float32)
    with atomic_writer(Path(path)) as fh:
        np.save(fh, c, allow_pickle=False)


def load_vocabulary_file(path: str | Path, dim: int = 128) -> tuple[np.ndarray, str]:
    """(centroids float32[V, dim], SHA-256 of the file) of a vocabulary file written by
    `save_vocabulary` (any `.npy` of shape [V, dim] with finite values)."""
    p = Path(path).expanduser()
    where = f"vocabulary file {p}"
    if not p.is_file():
        raise ConfigError(f"{where}: not found (vocabulary_source=file:PATH names a .npy "
                          f"of float32[V, {dim}] centroids)")
    data = p.read_bytes()
    try:
        c = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ConfigError(f"{where}: not a readable .npy array ({exc})") from exc
    if c.ndim != 2 or c.shape[1] != dim or c.shape[0] < 1:
        raise ConfigError(f"{where}: expected centroids of shape [V, {dim}], got "
                          f"{list(c.shape)}")
    if not np.issubdtype(c.dtype, np.number) or not np.isfinite(c).all():
        raise ConfigError(f"{where}: centroids must be finite numbers (dtype {c.dtype})")
    return np.ascontiguousarray(c, dtype=np.float32), hashlib.sha256(data).hexdigest()
