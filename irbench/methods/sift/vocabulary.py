"""Visual vocabulary: flat k-means (faiss) on local descriptors, and hard assignment.

Which images train the vocabulary is `vocabulary_source`: by default ('auto') the
dataset's customary independent set when it declares one (`Dataset.independent_set`:
Paris6k for Oxford5k and vice versa, as in Philbin et al. 2007 and Jégou et al. 2008),
else its train split, else its database (the common practice when no separate set is
given); the run record says which in `info()["vocabulary_trained_on"]`. Training vectors are
the descriptors as the method uses them (RootSIFT or SIFT), optionally a seeded random
subsample of at most `max_training_descriptors` of them.

Vocabulary size: `vocabulary_size = 0` means automatic, the largest power of two not
above n / 40 where n is the number of training descriptors actually used (faiss asks
for at least 39 points per centroid), clamped to [256, 65536], and never above n.
Quantization is hard assignment to the nearest centroid (squared L2, faiss
IndexFlatL2), in batches.

Sivic & Zisserman, "Video Google", ICCV 2003 (k-means vocabulary of SIFT); Philbin et
al., "Object retrieval with large vocabularies and fast spatial matching", CVPR 2007
(they use approximate k-means for 1M words; flat k-means is exact and fine at the
sizes a CPU run affords).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from irbench.errors import ConfigError
from irbench.harness.config import param

log = logging.getLogger(__name__)

__all__ = [
    "VocabularyOptions",
    "VOCABULARY_STAGE",
    "AUTO_MIN",
    "AUTO_MAX",
    "POINTS_PER_WORD",
    "auto_vocabulary_size",
    "resolve_vocabulary_size",
    "sample_indices",
    "train_kmeans",
    "Vocabulary",
]

AUTO_MIN = 256
AUTO_MAX = 65536
POINTS_PER_WORD = 40


VOCABULARY_STAGE = "vocabulary"
"""The cached stage of vocabulary training (after SIFT extraction; seeded)."""


@dataclass(frozen=True)
class VocabularyOptions:
    """Config fields of the visual vocabulary; method configs inherit them."""

    vocabulary_size: int = param(
        0, "number of visual words; 0 = auto: the largest power of two <= training "
           "descriptors / 40, clamped to [256, 65536] (and to the descriptor count)",
        minimum=0, stage=VOCABULARY_STAGE)
    kmeans_iterations: int = param(20, "k-means (Lloyd) iterations of vocabulary training",
                                   minimum=1, stage=VOCABULARY_STAGE)
    max_training_descriptors: int = param(
        500_000, "train the vocabulary on a seeded random subsample of at most this many "
                 "descriptors (0 = all); bounds k-means time on CPU", minimum=0,
        stage=VOCABULARY_STAGE)
    vocabulary_source: str = param(
        "auto", "images the vocabulary is trained on: 'auto' = the dataset's customary "
                "independent set if it declares one (Paris for Oxford and vice versa), else "
                "its train split, else its database; or 'train', 'database', or the name "
                "of a registered dataset whose database is used", stage=VOCABULARY_STAGE)


def auto_vocabulary_size(n_descriptors: int) -> int:
    """Largest power of two <= n / 40, clamped to [256, 65536], and <= n (for n >= 1)."""
    n = int(n_descriptors)
    target = n // POINTS_PER_WORD
    size = 1 << (target.bit_length() - 1) if target >= 1 else 1
    size = min(AUTO_MAX, max(AUTO_MIN, size))
    if n >= 1 and size > n:  # too few descriptors even for the minimum: one word each
        size = 1 << (n.bit_length() - 1)
    return size


def resolve_vocabulary_size(requested: int, n_descriptors: int) -> int:
    """The vocabulary size to train: `requested`, or the automatic size when it is 0."""
    if n_descriptors < 1:
        raise ConfigError("cannot train a visual vocabulary: the training images have no "
                          "SIFT keypoints at all")
    if requested < 0:
        raise ConfigError(f"vocabulary_size must be >= 0 (0 = auto), got {requested}")
    if requested == 0:
        return auto_vocabulary_size(n_descriptors)
    if requested > n_descriptors:
        raise ConfigError(f"vocabulary_size={requested} exceeds the {n_descriptors} training "
                          f"descriptors; use a smaller size or 0 (auto)")
    return int(requested)


def sample_indices(n_total: int, cap: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random subsample of at most `cap` of `n_total` rows
    (all rows when cap is 0 or n_total <= cap)."""
    if cap <= 0 or n_total <= cap:
        return np.arange(n_total, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_total, size=cap, replace=False)).astype(np.int64)


def train_kmeans(vectors: np.ndarray, k: int, *, niter: int, seed: int) -> np.ndarray:
    """faiss k-means centroids float32[k, d] of `vectors` (all of them are used)."""
    import faiss

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = x.shape
    if not 1 <= k <= n:
        raise ConfigError(f"cannot train {k} visual words on {n} descriptors")
    kmeans = faiss.Kmeans(
        d, int(k), niter=int(niter), seed=int(seed) % (2**31), verbose=False,
        # use every vector given (the subsample is ours and recorded), no faiss resampling
        max_points_per_centroid=max(256, -(-n // k) + 1), min_points_per_centroid=1,
    )
    kmeans.train(x)
    return np.ascontiguousarray(kmeans.centroids, dtype=np.float32).reshape(k, d)


@dataclass
class Vocabulary:
    """A trained vocabulary: centroids float32[V, d]; hard assignment by `quantize`."""

    centroids: np.ndarray

    def __post_init__(self) -> None:
        self.centroids = np.ascontiguousarray(self.centroids, dtype=np.float32)
        self._index = None

    @property
    def size(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    def _faiss_index(self):
        if self._index is None:
            import faiss

            self._index = faiss.IndexFlatL2(self.dim)
            self._index.add(self.centroids)
        return self._index

    def quantize(self, descriptors: np.ndarray, *,
                 prepare: Callable[[np.ndarray], np.ndarray] | None = None,
                 batch_size: int = 65536) -> np.ndarray:
        """Nearest-centroid word id of each row, uint32[n]. `prepare` maps a batch of
        stored descriptors to the float32 vectors the vocabulary was trained on."""
        n = int(descriptors.shape[0])
        words = np.empty(n, np.uint32)
        index = self._faiss_index()
        for begin in range(0, n, batch_size):
            batch = descriptors[begin:begin + batch_size]
            x = prepare(batch) if prepare is not None else batch
            x = np.ascontiguousarray(x, dtype=np.float32)
            _, ids = index.search(x, 1)
            words[begin:begin + len(x)] = ids[:, 0].astype(np.uint32)
        return words
