"""`vlad-intra`: VLAD of RootSIFT, intra-normalized (optionally PCA-whitened), cosine search.

Papers
    - H. Jégou, M. Douze, C. Schmid, P. Pérez, "Aggregating local descriptors into a compact
      image representation", CVPR 2010 (VLAD).
    - H. Jégou, F. Perronnin, M. Douze, J. Sánchez, P. Pérez, C. Schmid, "Aggregating local
      image descriptors into compact codes", TPAMI 2012 (power-law / signed square root
      "SSR" normalization of VLAD, alpha = 0.5, followed by L2).
    - R. Arandjelović, A. Zisserman, "All about VLAD", CVPR 2013 (intra-normalization; RootSIFT
      descriptors; a baseline of Mei et al. 2018 on Oxford).
    - H. Jégou, O. Chum, "Negative evidence and co-occurrences in image retrieval: the
      benefit of PCA and whitening", ECCV 2012 (PCA-whitening of VLAD; the optional last step).

Encoding (per image; k visual words c_1..c_k from k-means, descriptors x of dimension d=128,
NN(x) the nearest word under hard assignment, as in `SiftVocabularyMethod.words`):

    v_i   = sum_{x : NN(x) = i} (x - c_i)                  residual sums, i = 1..k (Jégou 2010)
    v     <- sign(v) * |v| ** alpha   (element-wise)      power normalization, off by default
    v_i   <- v_i / ||v_i||_2          (each block)        intra-normalization (All about VLAD)
    V     =  [v_1; ...; v_k] / ||[v_1; ...; v_k]||_2      global L2, D = k * d
    y     =  diag(lambda + eps)^(-1/2) U^T (V - mu)       PCA to p = pca_dim, whitened
    y     <- y / ||y||_2                                  (only with pca_dim > 0)

Similarity is the inner product of the final vectors (cosine), exact or faiss flat search.

Open choices and their defaults (config fields):
    - `intra_normalization` = true, `power_normalization` = 1 (alpha; 1 = off, 0.5 = the
      signed square root): All about VLAD proposes intra-normalization as a *replacement*
      for SSR; its abstract says "a simple change to the normalization method significantly
      improves retrieval performance". The paper's tables were not readable to us, so no
      figure of theirs is quoted here. SSR on top stays available with `--set
      power_normalization=0.5`; the order is then VLFeat's documented one (`vl_vlad`:
      square-rooting, then component-wise L2, then global L2). `intra_normalization=false`
      with alpha = 0.5 is Jégou 2012's SSR VLAD; with alpha = 1, the original VLAD of
      Jégou 2010.
    - `vocabulary_size` = 256 (D = 32,768). The paper's k could not be read (only its
      abstract: "mid-dimensional (20k-D to 30k-D)" descriptors, i.e. k of about 160 to
      234 with 128-D SIFT); 256 is the nearest power of two above, as in later VLAD
      work; Jégou et al. use k = 16..256. Not shared with the BoW methods' 20,000 words.
    - `training_descriptors_per_word` = 256 (65,536 descriptors at k = 256), faiss's
      own cap on points per centroid; the BoW methods' 40 (faiss's minimum, affordable at
      20,000 words and more) leaves VLAD's few centroids, and so its residuals, noisy.
    - `pca_dim` = 0 (off: the full D-dimensional vector, 4 * D bytes per image, 131 KB at
      k = 256, 663 MB for Oxford 5k). The paper also reports "small (128-D)" descriptors
      (abstract); `--set pca_dim=128` reduces the vector by PCA, as Jégou et al. reduce
      VLAD (how the paper's 128-D vectors were made, whitened or not, is not taken from
      its text: we could not read it). The PCA (mean mu, the p leading eigenvectors U and
      eigenvalues lambda of the covariance, ddof 1) is learned on the VLAD vectors of the
      images the vocabulary was trained on (`vocabulary_trained_on`: the independent set
      when there is one; recorded as `pca_trained_on`), images without features left out;
      `pca_whitening` = true divides each component by sqrt(lambda + eps) (Jégou & Chum
      2012), false keeps plain PCA. Centring leaves at most n - 1 directions, so pca_dim <=
      min(n - 1, D) for n training vectors. Cost: an eigendecomposition of the min(n, D)-
      square Gram or covariance matrix in float64 (n = 6,392 for Paris 6k: 330 MB).
    - Vocabulary: flat k-means (`SiftVocabularyMethod`) on `vocabulary_source`, shared with
      the other SIFT methods: 'auto' takes the dataset's independent set (Paris 6k for
      Oxford 5k, as the paper does), else its train split, else its database. Vocabulary
      adaptation (the paper's second contribution) and MultiVLAD (its third) are not
      implemented.
    - Features: DoG SIFT via OpenCV with RootSIFT (the paper: Hessian-affine RootSIFT); hard
      assignment; no per-cluster mass normalization.
    - An image with no features (or a query crop without keypoints) gets the all-zero vector
      (also after PCA: it is not centred): its score against everything is 0, so as a query
      it ranks the database by index (the tie rule) and as a database image it scores 0,
      below positive and above negative cosines.

Stages and their cache artifacts: `sift/features`, `vocabulary` and `words` (shared with
every SIFT method whose fields agree; quantization is reused when only the normalization
changes), `vlad-intra/vlad` (the D-dimensional vectors, keyed by the vocabulary id, the
features' id and the normalization fields) and `vlad-intra/pca` (mean, components,
eigenvalues; keyed by the vocabulary id, the training images' content identity and
`pca_dim`). `pca_whitening` is applied when vectors are projected and enters no artifact
key (toggling it reuses the PCA).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.linalg

from irbench.core.cache import release_pages, release_rows
from irbench.core.config import param
from irbench.core.search import l2_normalize, search
from irbench.datasets.base import Image, Query
from irbench.errors import ConfigError
from irbench.methods.base import QUERY_STAGE, Stage
from irbench.methods.sift.bow import SIFT_STAGES, SiftVocabularyMethod
from irbench.methods.sift.keypoints import SiftOptions
from irbench.methods.sift.vocabulary import VocabularyOptions

log = logging.getLogger(__name__)

__all__ = [
    "VladConfig",
    "VladIntraMethod",
    "VladPca",
    "aggregate_residuals",
    "normalize_vlad",
    "vlad_encode",
    "learn_pca",
    "image_batches",
]

EPS = 1e-12
WHITENING_EPS = 1e-12
"""eps of the whitening, diag(lambda + eps)^(-1/2): only guards a division by zero (VLAD
eigenvalues are ~1e-4..1e-1); near-zero eigenvalues are refused instead (`VladPca`)."""
SIFT_DIM = 128
"""Dimension d of a SIFT descriptor (a VLAD block)."""
RANK_TOLERANCE = 1e-8
"""An eigenvalue below this fraction of the largest is numerically zero: whitening it would
blow noise up to the size of the signal."""


@dataclass(frozen=True)
class VladConfig(VocabularyOptions, SiftOptions):
    """VLAD: the SIFT fields, the vocabulary fields (k = 256 here), the normalizations and
    the optional PCA-whitening."""

    vocabulary_size: int = param(
        256, "number of VLAD centroids k (vector dimension 128 k; All about VLAD's "
             "mid-dimensional descriptors are 20k-D to 30k-D)",
        minimum=1, stage="vocabulary")
    training_descriptors_per_word: int = param(
        256, "train k-means on a seeded random subsample of this many descriptors per "
             "centroid (0 = all): faiss's own cap, since VLAD's residuals depend on "
             "accurate centroids and k is small (BoW methods: 40)",
        minimum=0, stage="vocabulary")
    intra_normalization: bool = param(
        True, "L2-normalize each centroid's residual block before the global L2 "
              "(Arandjelovic & Zisserman 2013, proposed in place of the signed square root)",
        stage="vlad")
    power_normalization: float = param(
        1.0, "exponent alpha of sign(v)|v|^alpha applied to the residual sums before intra- "
             "and global normalization (1: off, the paper's intra-normalized VLAD; 0.5: "
             "signed square root of Jegou et al. 2012 on top, VLFeat's order)",
        stage="vlad")
    pca_dim: int = param(
        0, "PCA to this many dimensions after the global L2, then L2 again (0: off; the "
           "paper's small descriptors: 128); learned on the vocabulary's training images",
        minimum=0, stage="pca")
    pca_whitening: bool = param(
        True, "with pca_dim > 0: divide each PCA component by sqrt(eigenvalue) (Jegou & "
              "Chum 2012) before the final L2; false: plain PCA", stage=QUERY_STAGE)


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


def normalize_vlad(vlad: np.ndarray, *, power: float = 1.0, intra: bool = True) -> np.ndarray:
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
                centroids: np.ndarray, *, power: float = 1.0, intra: bool = True
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


# -- PCA-whitening ------------------------------------------------------------------------


@dataclass(frozen=True)
class VladPca:
    """A PCA of VLAD vectors (Jégou & Chum, ECCV 2012): `mean` float32[D], `components`
    float32[p, D] (orthonormal rows U^T, by decreasing variance), `eigenvalues` float64[p]
    (lambda, the variance along each, ddof 1) and `total_variance` (the covariance's trace)."""

    mean: np.ndarray
    components: np.ndarray
    eigenvalues: np.ndarray
    total_variance: float

    @property
    def dim(self) -> int:
        return int(len(self.eigenvalues))

    @property
    def explained_variance(self) -> float:
        """Fraction of the training vectors' variance the p components keep."""
        return float(self.eigenvalues.sum() / self.total_variance) if self.total_variance else 0.0

    def project(self, vectors: np.ndarray, *, whiten: bool, normalize: bool = True,
                batch_rows: int = 2048) -> np.ndarray:
        """float32[n, p]: U^T (x - mu), divided by sqrt(lambda + eps) when `whiten`, then
        L2-normalized when `normalize`. All-zero rows (images without features) stay zero.
        Projected `batch_rows` rows at a time (no full centred copy of a large database)."""
        x = np.asarray(vectors, np.float32)
        out = np.zeros((len(x), self.dim), np.float32)
        scale = (1.0 / np.sqrt(self.eigenvalues + WHITENING_EPS)).astype(np.float32) \
            if whiten else None
        for begin in range(0, len(x), max(1, batch_rows)):
            block = x[begin:begin + batch_rows]
            y = (block - self.mean) @ self.components.T
            if scale is not None:
                y *= scale
            y[~block.any(axis=1)] = 0.0
            out[begin:begin + len(block)] = y
            release_rows(x, begin, begin + len(block))  # a mapped database stays on disk
        return l2_normalize(out) if normalize else out


def _scatter(x: np.ndarray, mean: np.ndarray, *, gram: bool, block_bytes: int = 128 << 20
             ) -> np.ndarray:
    """float64 (x - mean)(x - mean)^T (`gram`, n x n) or (x - mean)^T (x - mean) (D x D),
    accumulated over blocks of columns (rows) so that no float64 copy of x is made."""
    n, d = x.shape
    out = np.zeros((n, n) if gram else (d, d), np.float64)
    if gram:
        step = max(1, block_bytes // (8 * max(n, 1)))
        for b in range(0, d, step):
            xc = x[:, b:b + step].astype(np.float64) - mean[b:b + step]
            out += xc @ xc.T
    else:
        step = max(1, block_bytes // (8 * max(d, 1)))
        for b in range(0, n, step):
            xc = x[b:b + step].astype(np.float64) - mean
            out += xc.T @ xc
    return out


def learn_pca(vectors: np.ndarray, dim: int) -> VladPca:
    """The `dim` leading principal directions of `vectors` float[n, D] (Jégou & Chum 2012).

    Eigendecomposition (scipy `eigh`, only the `dim` largest) of the covariance when
    D <= n, else of the n x n Gram matrix of the centred vectors (U = X_c^T W / sigma), in
    float64. Each component's sign is fixed (its largest-magnitude entry positive). Raises
    ConfigError when dim is not in [1, min(n - 1, D)] (centring leaves at most n - 1
    directions) or when the vectors span fewer than `dim` directions.
    """
    x = np.asarray(vectors, np.float32)
    if x.ndim != 2:
        raise ValueError(f"PCA: expected a matrix of vectors, got shape {x.shape}")
    n, d = x.shape
    limit = min(n - 1, d)
    if not 1 <= dim <= limit:
        raise ConfigError(f"pca_dim={dim} is not in [1, {max(limit, 0)}]: the PCA is learned "
                          f"on {n} training vectors of dimension {d}, and centring leaves at "
                          f"most min(n - 1, D) = {max(limit, 0)} directions")
    mean = x.mean(axis=0, dtype=np.float64)
    gram = n < d
    scatter = _scatter(x, mean, gram=gram)
    size = len(scatter)
    total = float(np.trace(scatter)) / (n - 1)
    values, vectors_ = scipy.linalg.eigh(scatter, subset_by_index=[size - dim, size - 1])
    values, vectors_ = values[::-1], vectors_[:, ::-1]
    rank = int((values > RANK_TOLERANCE * max(values[0], 0.0)).sum()) if values[0] > 0 else 0
    if rank < dim:
        raise ConfigError(f"pca_dim={dim}: the {n} training vectors span only {rank} "
                          f"directions (eigenvalues below {RANK_TOLERANCE:g} x the largest); "
                          f"use pca_dim <= {rank}")
    if gram:  # right singular vectors from the left ones: U = X_c^T W / sigma
        components = np.empty((dim, d), np.float64)
        step = max(1, (128 << 20) // (8 * n))
        for b in range(0, d, step):
            components[:, b:b + step] = vectors_.T @ (x[:, b:b + step].astype(np.float64)
                                                      - mean[b:b + step])
        components /= np.sqrt(values)[:, None]
    else:
        components = vectors_.T
    flip = np.sign(components[np.arange(dim), np.abs(components).argmax(axis=1)])
    components *= np.where(flip == 0, 1.0, flip)[:, None]
    return VladPca(mean=mean.astype(np.float32), components=components.astype(np.float32),
                   eigenvalues=values / (n - 1), total_variance=total)


# -- the method ---------------------------------------------------------------------------


class VladIntraMethod(SiftVocabularyMethod):
    """Intra-normalized VLAD (Arandjelović & Zisserman 2013), optionally power-normalized
    and PCA-whitened."""

    name = "vlad-intra"
    description = "VLAD of RootSIFT, intra-normalized (optional SSR, PCA-whitening), cosine"
    Config = VladConfig

    stages: ClassVar[Mapping[str, Stage]] = {**SIFT_STAGES,
                                             "vlad": Stage(after=("vocabulary",)),
                                             "pca": Stage(after=("vlad",))}
    batch_features: int = 262_144
    """Features encoded per batch (bounds the float32 residual copies)."""
    batch_bytes: int = 256 << 20
    """Bytes of dense [images, k, d] blocks per batch."""

    def __init__(self, config: Any = None, context: Any = None) -> None:
        super().__init__(config, context)
        cfg = self.config
        alpha = float(cfg.power_normalization)
        if not 0.0 < alpha <= 1.0:
            raise ConfigError(f"vlad-intra: power_normalization must be in (0, 1] "
                              f"(1 = off, 0.5 = signed square root), got {alpha}")
        dim = cfg.vocabulary_size * SIFT_DIM
        if cfg.pca_dim and cfg.vocabulary_size and cfg.pca_dim > dim:
            raise ConfigError(f"vlad-intra: pca_dim={cfg.pca_dim} exceeds the VLAD dimension "
                              f"{dim} (vocabulary_size {cfg.vocabulary_size} x {SIFT_DIM}); "
                              f"use pca_dim <= {dim}, or 0 to keep the full vector")
        self._database: np.ndarray | None = None
        self._pca: VladPca | None = None

    # -- the stages --------------------------------------------------------------------

    def vlad_vectors(self, role: str, images: Sequence[Image | Query]
                     ) -> tuple[np.ndarray, np.ndarray]:
        """(normalized VLAD vectors float32[n, k*128], feature counts int64[n]) of
        `images`, cached (stage `vlad`); `role` only names them in messages."""
        if self._vocabulary is None:
            raise RuntimeError(f"{self.name}: no vocabulary yet (call fit/index first)")
        vocab, cfg = self._vocabulary, self.config

        def write(folder: Path | None) -> dict[str, Any]:
            words, offsets = self.words(role, images)
            feats = self.features(role, images)
            n, dim = len(images), vocab.size * vocab.dim
            # written a batch of images at a time into the artifact's file (128 KiB per
            # image at 256 words): the vectors of a large database are never all in memory
            out = (np.zeros((n, dim), np.float32) if folder is None else
                   np.lib.format.open_memmap(folder / "vlad.npy", mode="w+",
                                             dtype=np.float32, shape=(n, dim)))
            max_images = max(1, self.batch_bytes // (4 * dim))
            for begin, end in image_batches(offsets, self.batch_features, max_images):
                lo, hi = int(offsets[begin]), int(offsets[end])
                out[begin:end] = vlad_encode(
                    self.vectors(feats.descriptors[lo:hi]), words[lo:hi],
                    offsets[begin:end + 1] - lo, vocab.centroids,
                    power=float(cfg.power_normalization), intra=bool(cfg.intra_normalization))
                release_rows(out, begin, end)
                release_pages(feats.descriptors)
            log.info("%s: %d %s VLAD vectors of dimension %d", self.name, n, role, dim)
            return {"vlad": out, "counts": np.diff(offsets)}

        art = self.cached_files("vlad", write, inputs={"vocabulary": self._vocabulary_id,
                                                       "features": self.features_id(images)})
        return (np.asarray(art["vlad"], np.float32).reshape(len(images), -1),
                np.asarray(art["counts"], np.int64))

    def ensure_pca(self) -> VladPca | None:
        """The PCA of stage `pca` (None when pca_dim = 0): learned on the VLAD vectors of
        the images the vocabulary was trained on (those with features), cached under the
        vocabulary's id and those images' content identity; records the training set."""
        cfg = self.config
        if not cfg.pca_dim:
            return None
        if self._vocabulary is None or self._vocabulary_training is None:
            raise RuntimeError(f"{self.name}: no vocabulary yet (call fit/index first)")
        images, trained_on = self._vocabulary_training
        dim = self._vocabulary.size * self._vocabulary.dim
        limit = min(len(images) - 1, dim)
        where = (f"{self.name}: the PCA is learned on the VLAD vectors of the vocabulary's "
                 f"training images ({trained_on}, {len(images)} images)")
        if cfg.pca_dim > limit:  # before computing any vector
            raise ConfigError(f"{where}: pca_dim={cfg.pca_dim} exceeds min(n - 1, D) = "
                              f"{max(limit, 0)} (D = {dim}); lower pca_dim")

        def compute() -> dict[str, Any]:
            vlad, counts = self.vlad_vectors(trained_on, images)
            used = vlad if counts.all() else vlad[counts > 0]
            try:
                pca = learn_pca(used, cfg.pca_dim)
            except ConfigError as exc:
                raise ConfigError(f"{where}, {len(used)} of them with features: {exc}") from None
            log.info("%s: PCA %d -> %d learned on %d VLAD vectors of %s (%.1f%% of the "
                     "variance)", self.name, dim, pca.dim, len(used), trained_on,
                     100 * pca.explained_variance)
            return {"mean": pca.mean, "components": pca.components,
                    "eigenvalues": pca.eigenvalues, "total_variance": pca.total_variance,
                    "n_training_images": len(images), "n_training_vectors": len(used)}

        art = self.cached("pca", compute, inputs={"vocabulary": self._vocabulary_id,
                                                  "images": self.context.identify(images)})
        self.forget_features()
        pca = VladPca(mean=np.asarray(art["mean"], np.float32),
                      components=np.asarray(art["components"], np.float32),
                      eigenvalues=np.asarray(art["eigenvalues"], np.float64),
                      total_variance=float(art["total_variance"]))
        self._info.update({
            "pca_dim": pca.dim,
            "pca_whitening": bool(cfg.pca_whitening),
            "pca_trained_on": trained_on,
            "pca_training_images": int(art["n_training_images"]),
            "pca_training_vectors": int(art["n_training_vectors"]),
            "pca_explained_variance": round(pca.explained_variance, 4),
        })
        return pca

    def encode(self, role: str, images: Sequence[Image | Query]) -> np.ndarray:
        """The final vectors float32[n, k*128] (or [n, pca_dim] after PCA) of `images`;
        records the feature counts of `role` in `info`."""
        vlad, counts = self.vlad_vectors(role, images)
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
        if self._pca is not None:
            vlad = self._pca.project(vlad, whiten=bool(self.config.pca_whitening))
        return vlad

    # -- the contract ------------------------------------------------------------------

    def index(self, database: Sequence[Image]) -> None:
        database = list(database)
        if self._vocabulary is None:  # no train split: the vocabulary comes from the database
            self.ensure_vocabulary(database, "database")
        self._pca = self.ensure_pca()
        self._database = self.encode("database", database)
        self.forget_features()
        cfg, vocab = self.config, self._vocabulary
        self._info.update({
            "vlad_dimension": int(vocab.size * vocab.dim),
            "output_dimension": int(self._database.shape[1]),
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
        if cfg.pca_dim:
            steps.append(f"PCA {cfg.pca_dim}")
            if cfg.pca_whitening:
                steps.append("whitening")
            steps.append("L2")
        return " > ".join(steps)
