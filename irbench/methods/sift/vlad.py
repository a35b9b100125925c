"""`vlad-intra`: VLAD of RootSIFT with power and intra-normalization, searched by cosine.

Papers
    - H. Jégou, M. Douze, C. Schmid, P. Pérez, "Aggregating local descriptors into a compact
      image representation", CVPR 2010 (VLAD).
    - H. Jégou, F. Perronnin, M. Douze, J. Sánchez, P. Pérez, C. Schmid, "Aggregating local
      image descriptors into compact codes", TPAMI 2012 (power-law / signed square root
      "SSR" normalization of VLAD, alpha = 0.5, followed by L2).
    - R. Arandjelović, A. Zisserman, "All about VLAD", CVPR 2013 (intra-normalization; RootSIFT
      descriptors; a baseline of Mei et al. 2018 on Oxford).

Encoding (per image; k visual words c_1..c_k from k-means, descriptors x of dimension d=128,
NN(x) the nearest word under hard assignment, as in `SiftVocabularyMethod.words`):

    v_i   = sum_{x : NN(x) = i} (x - c_i)                  residual sums, i = 1..k (Jégou 2010)
    v     <- sign(v) * |v| ** alpha   (element-wise)      power normalization (Jégou 2012)
    v_i   <- v_i / ||v_i||_2          (each block)        intra-normalization (All about VLAD)
    V     =  [v_1; ...; v_k] / ||[v_1; ...; v_k]||_2      global L2, D = k * d

Similarity is the inner product of the final vectors (cosine), exact or faiss flat search.

Open choices and their defaults (config fields):
    - `power_normalization` = 0.5 (alpha; 0.5 is the signed square root, 1 = off). The issue
      asks for intra- *and* power normalization. All about VLAD proposes intra-normalization
      as an alternative to SSR; neither paper fixes the order of the two when combined. We
      use VLFeat's documented order (`vl_vlad`: square-rooting, then component-wise L2, then
      global L2), so every non-empty block is unit-norm before the final L2 and each coarse
      cell contributes equally, whatever its burstiness; `power_normalization=1` gives the
      paper's plain intra-normalized VLAD.
    - `intra_normalization` = true (false with alpha = 0.5 is Jégou 2012's SSR VLAD; false
      with alpha = 1 is the original VLAD of Jégou 2010).
    - `vocabulary_size` = 256 (D = 32,768), the vocabulary All about VLAD's mid-dimensional
      ("20k-D to 30k-D") results use; Jégou et al. use k = 16..256 (often 64). 0 = the shared
      automatic size of `vocabulary`, usually far too large for a dense VLAD.
    - Vocabulary: flat k-means (`SiftVocabularyMethod`) on `vocabulary_source`, shared with
      the other SIFT methods: 'auto' takes the dataset's independent set (Paris 6k for
      Oxford 5k, as the paper does), else its train split, else its database. Vocabulary
      adaptation (the paper's second contribution) and MultiVLAD (its third) are not
      implemented.
    - Features: DoG SIFT via OpenCV with RootSIFT (the paper: Hessian-affine RootSIFT); hard
      assignment; no per-cluster mass normalization.
    - No PCA / whitening (the paper's 128-D results): the full D-dimensional vector is kept,
      which costs 4 * D bytes per image (131 KB at k = 256; 663 MB for Oxford 5k).
    - An image with no features (or a query crop without keypoints) gets the all-zero vector:
      its score against everything is 0, so as a query it ranks the database by index (the
      tie rule) and as a database image it scores 0, below positive and above negative
      cosines.

Stages and their cache artifacts: `sift/features`, `vocabulary` and `words` (shared with
every SIFT method whose fields agree; quantization is reused when only the normalization
changes) and `vlad-intra/vlad` (the final vectors, keyed by the vocabulary id, the
features' id and the normalization fields).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from irbench.datasets.base import Image, Query
from irbench.errors import ConfigError
from irbench.harness.config import param
from irbench.harness.search import l2_normalize, search
from irbench.methods.base import Stage
from irbench.methods.sift.bow import SIFT_STAGES, SiftVocabularyMethod
from irbench.methods.sift.keypoints import SiftOptions
from irbench.methods.sift.vocabulary import VocabularyOptions

log = logging.getLogger(__name__)

__all__ = [
    "VladConfig",
    "VladIntraMethod",
    "aggregate_residuals",
    "normalize_vlad",
    "vlad_encode",
    "image_batches",
]

EPS = 1e-12


@dataclass(frozen=True)
class VladConfig(VocabularyOptions, SiftOptions):
    """VLAD: the SIFT fields, the vocabulary fields (k = 256 here) and the normalizations."""

    vocabulary_size: int = param(
        256, "number of VLAD centroids k (vector dimension 128 k); All about VLAD's "
             "mid-dimensional results: 256; 0 = the automatic BoW size (too large for VLAD)",
        minimum=0, stage="vocabulary")
    intra_normalization: bool = param(
        True, "L2-normalize each centroid's residual block before the global L2 "
              "(Arandjelovic & Zisserman 2013)", stage="vlad")
    power_normalization: float = param(
        0.5, "exponent alpha of sign(v)|v|^alpha applied to the residual sums before intra- "
             "and global normalization (0.5: signed square root, Jegou et al. 2012; 1: off)",
        stage="vlad")


# -- the encoding -------------------------------------------------------------------------


def aggregate_residuals(vectors: np.ndarray, words: np.ndarray, offsets: np.ndarray,
                        centroids: np.ndarray) -> np.ndarray:
    """Unnormalized VLAD, float32[n, k, d]: for image j and word i, the sum of x - c_i over
    image j's descriptors x assigned to i. `vectors` float[F, d], `words` int[F] in [0, k),
    `offsets` int64[n+1] from 0 to F (image j owns rows offsets[j]:offsets[j+1]).

    Vectorized: the features are sorted (stably) by (image, word) and the residuals of each
    group summed with `np.add.reduceat` in float64; no loop over images or descriptors.
    """
    centroids = np.asarray(centroids, np.float32)
    offsets = np.asarray(offsets, np.int64)
    vectors = np.asarray(vectors, np.float32)
    words = np.asarray(words, np.int64)
    k, d = centroids.shape
    n = len(offsets) - 1
    n_feat = int(offsets[-1])
    if offsets[0] != 0 or vectors.shape != (n_feat, d) or words.shape != (n_feat,):
        raise ValueError(f"VLAD: {vectors.shape} vectors and {words.shape} words do not match "
                         f"offsets {int(offsets[0])}..{n_feat} of dimension-{d} descriptors")
    out = np.zeros((n, k, d), np.float32)
    if n_feat == 0:
        return out
    if words.min() < 0 or words.max() >= k:
        raise ValueError(f"VLAD: word ids outside [0, {k})")
    image = np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))
    key = image * k + words
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    starts = np.flatnonzero(np.concatenate(([True], sorted_key[1:] != sorted_key[:-1])))
    residuals = vectors[order] - centroids[words[order]]
    sums = np.add.reduceat(residuals, starts, axis=0, dtype=np.float64)
    out.reshape(n * k, d)[sorted_key[starts]] = sums
    return out


def normalize_vlad(vlad: np.ndarray, *, power: float = 0.5, intra: bool = True) -> np.ndarray:
    """float32[n, k*d] from unnormalized blocks float[n, k, d]: power normalization
    (sign(v)|v|^power, skipped at power = 1), intra-normalization (each block to unit L2,
    all-zero blocks stay zero), then global L2 (all-zero rows stay zero)."""
    if not 0.0 < power <= 1.0:
        raise ConfigError(f"power_normalization must be in (0, 1], got {power}")
    v = np.asarray(vlad, np.float32)
    n = v.shape[0]
    if power != 1.0:
        v = np.sign(v) * np.power(np.abs(v), np.float32(power))
    if intra:
        v = v / np.maximum(np.linalg.norm(v, axis=2, keepdims=True), EPS)
    return l2_normalize(v.reshape(n, -1)).astype(np.float32, copy=False)


def vlad_encode(vectors: np.ndarray, words: np.ndarray, offsets: np.ndarray,
                centroids: np.ndarray, *, power: float = 0.5, intra: bool = True
                ) -> np.ndarray:
    """Normalized VLAD vectors float32[n, k*d] of the images described by `offsets`
    (see `aggregate_residuals` and `normalize_vlad`); an image with no rows is all zero."""
    return normalize_vlad(aggregate_residuals(vectors, words, offsets, centroids),
                          power=power, intra=intra)


def image_batches(offsets: np.ndarray, max_features: int, max_images: int
                  ) -> Iterator[tuple[int, int]]:
    """Consecutive image ranges [begin, end) holding at most `max_features` features
    (or a single image that alone exceeds it) and at most `max_images` images."""
    offsets = np.asarray(offsets, np.int64)
    n = len(offsets) - 1
    begin = 0
    while begin < n:
        limit = offsets[begin] + max(1, max_features)
        end = int(np.searchsorted(offsets, limit, side="right")) - 1
        end = min(max(end, begin + 1), begin + max(1, max_images), n)
        yield begin, end
        begin = end


# -- the method ---------------------------------------------------------------------------


class VladIntraMethod(SiftVocabularyMethod):
    """VLAD with power and intra-normalization (Arandjelović & Zisserman 2013)."""

    name = "vlad-intra"
    description = "VLAD of RootSIFT, signed-square-root and intra-normalized, cosine search"
    Config = VladConfig

    stages: ClassVar[Mapping[str, Stage]] = {**SIFT_STAGES,
                                             "vlad": Stage(after=("vocabulary",))}
    batch_features: int = 262_144
    """Features encoded per batch (bounds the float32 residual copies)."""
    batch_bytes: int = 256 << 20
    """Bytes of dense [images, k, d] blocks per batch."""

    def __init__(self, config: Any = None, context: Any = None) -> None:
        super().__init__(config, context)
        alpha = float(self.config.power_normalization)
        if not 0.0 < alpha <= 1.0:
            raise ConfigError(f"vlad-intra: power_normalization must be in (0, 1] "
                              f"(0.5 = signed square root, 1 = off), got {alpha}")
        self._database: np.ndarray | None = None

    def encode(self, role: str, images: Sequence[Image | Query]) -> np.ndarray:
        """Normalized VLAD vectors float32[n, k*128] of `images`, cached; records the
        feature counts of `role` in `info`."""
        if self._vocabulary is None:
            raise RuntimeError(f"{self.name}: no vocabulary yet (call fit/index first)")
        vocab, cfg = self._vocabulary, self.config

        def compute() -> dict[str, Any]:
            feats = self.features(role, images)
            words, offsets = self.words(role, images)
            n, dim = len(images), vocab.size * vocab.dim
            out = np.zeros((n, dim), np.float32)
            max_images = max(1, self.batch_bytes // (4 * dim))
            for begin, end in image_batches(offsets, self.batch_features, max_images):
                lo, hi = int(offsets[begin]), int(offsets[end])
                out[begin:end] = vlad_encode(
                    self.vectors(feats.descriptors[lo:hi]), words[lo:hi],
                    offsets[begin:end + 1] - lo, vocab.centroids,
                    power=float(cfg.power_normalization), intra=bool(cfg.intra_normalization))
            log.info("%s: %d %s VLAD vectors of dimension %d", self.name, n, role, dim)
            return {"vlad": out, "counts": np.diff(offsets)}

        art = self.cached("vlad", compute, inputs={"vocabulary": self._vocabulary_id,
                                                   "features": self.features_id(images)})
        vlad = np.asarray(art["vlad"], np.float32).reshape(len(images), -1)
        counts = np.asarray(art["counts"], np.int64)
        empty = int((counts == 0).sum())
        mean = round(float(counts.mean()), 2) if len(counts) else 0.0
        if role == "database":
            self._info.update({"database_features": int(counts.sum()),
                               "mean_features_per_image": mean,
                               "images_without_features": empty})
        else:
            self._info.update({"query_features": int(counts.sum()),
                               "mean_features_per_query": mean,
                               "queries_without_features": empty})
        return vlad

    def index(self, database: Sequence[Image]) -> None:
        database = list(database)
        if self._vocabulary is None:  # no train split: the vocabulary comes from the database
            self.ensure_vocabulary(database, "database")
        self._database = self.encode("database", database)
        self.forget_features()
        cfg = self.config
        self._info.update({
            "vlad_dimension": int(self._database.shape[1]),
            "intra_normalization": bool(cfg.intra_normalization),
            "power_normalization": float(cfg.power_normalization),
            "normalization_order": self.normalization_order(),
        })

    def query(self, queries: Sequence[Query], k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._database is None:
            raise RuntimeError(f"{self.name}: index() must run before query()")
        q = self.encode("queries", list(queries))
        self.forget_features()
        return search(self._database, q, k, backend=self.context.search)

    def index_bytes(self) -> int | None:
        return None if self._database is None else int(self._database.nbytes)

    def normalization_order(self) -> str:
        """The applied steps, in order (for the run record)."""
        cfg = self.config
        steps = ["residual sums"]
        if float(cfg.power_normalization) != 1.0:
            steps.append(f"power {cfg.power_normalization:g}")
        if cfg.intra_normalization:
            steps.append("intra L2")
        steps.append("global L2")
        return " > ".join(steps)
