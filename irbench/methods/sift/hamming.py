"""HE+WGC: Hamming embedding and weak geometric consistency, scored in the inverted file.

Jégou, Douze & Schmid, "Hamming embedding and weak geometric consistency for large
scale image search", ECCV 2008. What is implemented, by section of the paper:

- Sec. 3, Hamming embedding (HE). A random orthogonal projection P (d_b x d, here
  `signature_bits` x 128): the first d_b rows of the Q factor of the QR decomposition
  of a seeded d x d Gaussian matrix. Each training descriptor x is projected, z = P x,
  and for every visual word w and bit i the threshold τ_{w,i} is the median of z_i
  over the training descriptors assigned to w (the vocabulary's own training sample).
  A descriptor's signature has b_i(x) = 1 iff z_i > τ_{q(x),i}. Two descriptors match
  iff they share a visual word and their Hamming distance h(b(x), b(y)) <= h_t
  (`hamming_threshold`, 22 for 64 bits as in the paper and in Mei et al. 2018).
- Sec. 2 and 3.2, the voting score. A match (x, y) votes idf(w)^2 for the database
  image of y (the tf-idf matching function f_tf-idf restricted by HE); the image's
  score is the sum of its votes divided by the L2 norms of the query's and the image's
  tf-idf BoW vectors. With h_t = d_b and WGC off this is exactly the BoW cosine of
  `invfile.TfIdfIndex` (tested).
- Sec. 4, weak geometric consistency (WGC). Every vote also goes to a histogram of the
  orientation difference (angle of the query feature minus angle of the database
  feature) and one of the log-scale difference, per database image; the image's score
  is min(max_δa h_a(δa), max_δs h_s(δs)) — the peak of each histogram, the smaller of
  the two — then normalized as above. The histograms are accumulated with
  `np.bincount` during the inverted-file scan over every database image (not on a
  shortlist), as in the paper.

Choices the paper leaves open (each a config field, default first):

- Descriptors are RootSIFT (`rootsift=True`, shared with the vocabulary); the paper
  used SIFT on Hessian-affine regions. P is seeded by the run seed.
- A word with fewer than `min_median_samples` (16) training descriptors takes the
  median of all training projections as its thresholds (a global fallback; the paper
  trains on an independent set large enough for every cell).
- Angle and scale are stored per posting as uint8 codes: angle · 256 / 2π (mod 256)
  and 16 · log2(keypoint size) (1/16 octave, sizes 1 to 65,536 px); the histogram bins
  are formed from code differences at query time, so `angle_bins` (8, i.e. 45°, bin 0
  centred on no rotation) and `scale_bins` (8) of `scale_bin_octaves` (0.5, bin centred
  on no scale change; differences beyond the range count in the edge bins) change
  without re-indexing. `histogram_smoothing` (1 = none) is the width of a moving-
  average window applied to both histograms before the peaks are taken (circular for
  the angle).
- `wgc_prior='none'`. Jégou's reference code (ivfgeo.h of the INRIA yael / bigimbaz
  code) can multiply the angle-histogram bins by "Bayesian" coefficients before the
  peak, favouring no rotation ('upright', AS_MAX_PREMULTIPLY_1), 0 and ±90°
  ('upright-or-sideways', _3) or all four quarter turns ('quarter-turns', _4); here the
  bins holding those rotations are multiplied by `wgc_prior_weight` (2, a choice: the
  reference weights are not published) after the smoothing. The reference Python
  default (wgc_type 0x50545) is 64 angle bins, log-scale steps of ×1.2, both histograms
  smoothed over 5 bins and the quarter-turn prior.
- `hamming_weighting='none'` is the paper's (every match within h_t votes idf^2);
  'gaussian' weighs a vote by exp(-h^2 / σ^2), σ = `gaussian_sigma` (16), the later
  weighting of Jégou, Douze & Schmid, "Improving bag-of-features for large scale image
  search", IJCV 2010.
- `burstiness=False`. When on, intra-image burstiness (Jégou, Douze & Schmid, "On the
  burstiness of visual elements", CVPR 2009, Sec. 4.1): a vote is divided by the square
  root of the number of matches its query feature has in that database image, and by
  the square root of the number of matches its database feature has in the query.

Evidence for the WGC defaults (8 × 8 bins, no smoothing, no prior), on 95 real
photographs of 17 objects (every photo a query; 20k-word vocabulary), mAP %: defaults
86.9; `wgc=False` 84.0; 16 / 32 / 64 angle bins 84.6 / 82.3 / 79.9, and 85.9 with 64
smoothed over 5; smoothing 3 / 5 at 8 bins 85.4 / 84.7; the reference default above 82.4
(86.0 without its prior); prior 'upright' ×1.5 / ×2 / ×4 85.2 / 84.8 / 83.3,
'quarter-turns' ×2 84.0; 32 scale bins of log2(1.2) octave 87.4 (20 queries up, 21
down); 16 scale bins of 0.5 octave 87.2 (22 up, 1 down). No variant gains a point. A
prior can raise a score only where the angle peak is the smaller of the two, which holds
for 79 % of the wrong images that get a vote but for 41 % of the right ones, so it lifts
wrong images more.

The inverted file (`HammingIndex`) holds one posting per database feature, CSR by
visual word: image id uint32, signature uint64, angle and scale codes uint8 — 14
bytes per posting — plus the idf of each word and the tf-idf norm of each image. It is
built by streaming over the per-feature arrays in two passes (`invfile` module doc)
and cached as the stage `hamming-index`, whose files the build writes in place: the
index is memory-mapped, never held in memory whole, and reused by later runs.
Hamming distances use `np.bitwise_count` on the packed uint64 signatures and all votes
and histograms `np.bincount`; there is no Python loop over postings (one over queries).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from irbench.core.cache import iter_blocks
from irbench.core.config import param
from irbench.core.progress import Advance
from irbench.core.search import topk_from_scores
from irbench.datasets.base import Image, Query
from irbench.errors import ConfigError
from irbench.methods.base import QUERY_STAGE, Stage
from irbench.methods.sift.bow import SIFT_STAGES, SiftVocabularyMethod
from irbench.methods.sift.invfile import (
    BUILD_BLOCK,
    InvertedFile,
    PostingBlock,
    block_vectors,
    bow_vectors,
    check_lengths,
    idf_of,
    image_blocks,
    new_array,
    read_rows,
)
from irbench.methods.sift.keypoints import (
    ANGLE_LEVELS,
    FEATURE_BLOCK,
    SCALE_CODES_PER_OCTAVE,
    SiftOptions,
    angle_codes,
    scale_codes,
    wgc_angle_codes,
)
from irbench.methods.sift.vocabulary import (
    VocabularyOptions,
    sample_indices,
    training_sample_size,
)

__all__ = [
    "HammingOptions",
    "HeWgcConfig",
    "HammingEmbedding",
    "HammingIndex",
    "random_projection",
    "train_embedding",
    "angle_codes",
    "scale_codes",
    "HeWgcMethod",
]


WGC_PRIOR_TURNS: dict[str, tuple[int, ...]] = {
    "none": (),
    "upright": (0,),
    "upright-or-sideways": (0, 1, 3),
    "quarter-turns": (0, 1, 2, 3),
}
"""Quarter turns (k · 90°) whose angle-difference bins each `wgc_prior` favours."""


EMBEDDING_STAGE = "embedding"
"""The cached stage of the Hamming embedding (projection and thresholds; seeded)."""
INDEX_STAGE = "hamming-index"
"""The cached stage of the database's `HammingIndex` (its arrays memory-mapped)."""

HAMMING_STAGES: dict[str, Stage] = {
    **SIFT_STAGES,
    EMBEDDING_STAGE: Stage(after=("vocabulary",), seeded=True, shared=True),
    "signatures": Stage(after=(EMBEDDING_STAGE,), shared=True),
    INDEX_STAGE: Stage(after=("signatures",), shared=True),
}
"""The SIFT stages, then the embedding, the signatures of every feature and the
inverted file of a database."""

POSTING_COLUMNS: dict[str, Any] = {"signature": np.uint64, "angle": np.uint8,
                                   "scale": np.uint8}
"""The per-posting columns of `HammingIndex` and their dtypes (14 bytes per posting
with the uint32 image id)."""


@dataclass(frozen=True)
class ScanSettings:
    """Config fields of the query-time scan: Hamming matching and weak geometric
    consistency (what `HammingIndex.scores` needs: picklable, hashable; method configs
    inherit them through `HammingOptions`)."""

    hamming_threshold: int = param(
        22, "h_t: two descriptors of one visual word match when their signatures differ in "
            "at most this many bits (paper, and Mei et al. 2018: 22 for 64 bits)",
        minimum=0, maximum=64, stage=QUERY_STAGE)
    hamming_weighting: str = param(
        "none", "vote of a match: 'none' = idf^2 for every match within h_t (ECCV 2008); "
                "'gaussian' = idf^2 * exp(-h^2/sigma^2) (Jegou et al. IJCV 2010)",
        choices=("none", "gaussian"), stage=QUERY_STAGE)
    gaussian_sigma: float = param(16.0, "sigma of the Gaussian weighting (IJCV 2010: 16)",
                                  stage=QUERY_STAGE)
    burstiness: bool = param(
        False, "divide each vote by sqrt(matches of its query feature in the image) and "
               "sqrt(matches of its database feature in the query) (CVPR 2009, intra-image)",
        stage=QUERY_STAGE)
    wgc: bool = param(True, "weak geometric consistency: score = min of the peaks of the "
                            "angle- and log-scale-difference histograms (ECCV 2008, Sec. 4)",
                      stage=QUERY_STAGE)
    angle_bins: int = param(8, "WGC orientation-difference histogram bins over 360 degrees",
                            minimum=1, maximum=ANGLE_LEVELS, stage=QUERY_STAGE)
    scale_bins: int = param(8, "WGC log-scale-difference histogram bins", minimum=1,
                            stage=QUERY_STAGE)
    scale_bin_octaves: float = param(0.5, "width of one log-scale bin, in octaves",
                                     stage=QUERY_STAGE)
    histogram_smoothing: int = param(
        1, "moving-average window (bins) applied to the WGC histograms before taking "
           "their peaks; 1 = none", minimum=1, stage=QUERY_STAGE)
    wgc_prior: str = param(
        "none", "WGC prior on the rotation: multiply the angle-histogram bins of these "
                "rotations by wgc_prior_weight before the peak: 'upright' = 0 degrees, "
                "'upright-or-sideways' = 0 and +-90, 'quarter-turns' = 0, +-90 and 180 "
                "(Jegou's ivfgeo AS_MAX_PREMULTIPLY_1 / _3 / _4)",
        choices=tuple(WGC_PRIOR_TURNS), stage=QUERY_STAGE)
    wgc_prior_weight: float = param(
        2.0, "factor of the favoured angle bins under wgc_prior (1 = no effect; a choice: "
             "the reference code's weights are not published)", minimum=1.0,
        stage=QUERY_STAGE)

    def __post_init__(self) -> None:
        for name in ("gaussian_sigma", "scale_bin_octaves"):  # > 0 (param has only >=)
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()

    @classmethod
    def of(cls, cfg: Any) -> ScanSettings:
        """The scan fields of a method config."""
        return cls(**{f: getattr(cfg, f) for f in cls.__dataclass_fields__})


@dataclass(frozen=True)
class HammingOptions(ScanSettings):
    """Config fields of Hamming embedding (the signatures), and the scan's."""

    signature_bits: int = param(64, "d_b: bits of each binary signature, 1..64 (paper: 64)",
                                minimum=1, maximum=64, stage=EMBEDDING_STAGE)
    min_median_samples: int = param(
        16, "a word with fewer training descriptors uses the median of all training "
            "projections as its thresholds", minimum=1, stage=EMBEDDING_STAGE)

    def __post_init__(self) -> None:
        if self.hamming_threshold > self.signature_bits:
            raise ConfigError(f"hamming_threshold must be in 0..signature_bits "
                              f"({self.signature_bits}), got {self.hamming_threshold}")
        super().__post_init__()


@dataclass(frozen=True)
class HeWgcConfig(HammingOptions, VocabularyOptions, SiftOptions):
    """HE+WGC: the SIFT fields, the vocabulary fields, then the Hamming / WGC fields."""


# -- the embedding --------------------------------------------------------------------


def random_projection(bits: int, dim: int, seed: int) -> np.ndarray:
    """P float32[bits, dim]: the first `bits` rows of the orthogonal Q of a seeded
    Gaussian dim x dim matrix (ECCV 2008, Sec. 3.1, off-line step 1)."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    q = q * np.sign(np.diag(r))  # a unique Q (Haar-distributed), independent of LAPACK's signs
    return np.ascontiguousarray(q[:bits], dtype=np.float32)


def grouped_medians(values: np.ndarray, groups: np.ndarray, n_groups: int,
                    min_count: int) -> np.ndarray:
    """Per group and column, the median of `values` float[n, c] over the rows of that
    group (mean of the two middle values for an even count); groups with fewer than
    `min_count` rows (or none) get the median over all rows. float32[n_groups, c]."""
    values = np.asarray(values, np.float64)
    groups = np.asarray(groups, np.int64)
    n, c = values.shape
    out = np.empty((n_groups, c), np.float64)
    out[:] = np.median(values, axis=0) if n else 0.0
    counts = np.bincount(groups, minlength=n_groups)
    starts = np.cumsum(counts) - counts
    ok = np.flatnonzero(counts >= max(1, min_count))
    if ok.size:
        lo = starts[ok] + (counts[ok] - 1) // 2
        hi = starts[ok] + counts[ok] // 2
        for col in range(c):
            order = np.lexsort((values[:, col], groups))  # by group, then value
            sorted_col = values[order, col]
            out[ok, col] = 0.5 * (sorted_col[lo] + sorted_col[hi])
    return out.astype(np.float32)


@dataclass
class HammingEmbedding:
    """P float32[bits, d] and the thresholds τ float32[V, bits] of each word and bit."""

    projection: np.ndarray
    thresholds: np.ndarray

    @property
    def bits(self) -> int:
        return int(self.projection.shape[0])

    def signatures(self, vectors: np.ndarray, words: np.ndarray,
                   batch_size: int = FEATURE_BLOCK, *,
                   prepare: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
        """Packed signatures uint64[n]: bit i set iff (P x)_i > τ_{q(x), i} (bit i of the
        integer, little-endian; unused high bits are 0). `prepare` maps a batch of stored
        descriptors to the vectors x, so that only one batch is ever held as float32."""
        n = len(vectors)
        out = np.zeros(n, np.uint64)
        for begin, batch in zip(range(0, n, batch_size), iter_blocks(vectors, batch_size),
                                strict=True):
            x = np.asarray(prepare(batch) if prepare is not None else batch, np.float32)
            z = x @ self.projection.T
            bits = z > self.thresholds[np.asarray(words[begin:begin + len(x)], np.int64)]
            packed = np.zeros((len(x), 8), np.uint8)
            packed[:, : (self.bits + 7) // 8] = np.packbits(bits, axis=1, bitorder="little")
            out[begin:begin + len(x)] = packed.view("<u8")[:, 0]
        return out


def train_embedding(vectors: np.ndarray, words: np.ndarray, n_words: int, bits: int,
                    seed: int, min_count: int) -> HammingEmbedding:
    """P and the per-word per-bit medians on training `vectors` float[n, d] assigned to
    `words` (ECCV 2008, Sec. 3.1, off-line steps 1-3)."""
    vectors = np.asarray(vectors, np.float32)
    projection = random_projection(bits, vectors.shape[1], seed)
    z = vectors @ projection.T
    thresholds = grouped_medians(z, words, n_words, min_count)
    return HammingEmbedding(projection, thresholds)


# -- the index ------------------------------------------------------------------------


def _smooth(hist: np.ndarray, width: int, circular: bool) -> np.ndarray:
    """Moving average of `width` bins along the last axis (circular or zero-padded)."""
    if width <= 1:
        return hist
    half = width // 2
    if circular:
        padded = np.concatenate([hist[:, -half:], hist, hist[:, :width - 1 - half]], axis=1)
    else:
        zeros = np.zeros((hist.shape[0], half), hist.dtype)
        padded = np.concatenate([zeros, hist, np.zeros((hist.shape[0], width - 1 - half),
                                                       hist.dtype)], axis=1)
    c = np.cumsum(padded, axis=1)
    c = np.concatenate([np.zeros((hist.shape[0], 1), c.dtype), c], axis=1)
    return (c[:, width:] - c[:, :-width]) / width


def _angle_bin(difference: np.ndarray, bins: int) -> np.ndarray:
    """Bin of orientation-code differences (any integers) among `bins` over 360°, bin 0
    centred on no rotation."""
    shifted = (np.asarray(difference, np.int64) + ANGLE_LEVELS // (2 * bins)) % ANGLE_LEVELS
    return shifted * bins // ANGLE_LEVELS


class HammingIndex:
    """Inverted file of HE+WGC: one posting per database feature with columns
    `signature` uint64, `angle` uint8, `scale` uint8; `idf` float32[V]; `norms`
    float32[N] (each image's tf-idf L2 norm)."""

    def __init__(self, invfile: InvertedFile, idf: np.ndarray, norms: np.ndarray) -> None:
        self.invfile = invfile
        self.idf = np.asarray(idf, np.float32)
        self.norms = np.asarray(norms, np.float32)

    @classmethod
    def build_reference(cls, words: np.ndarray, offsets: np.ndarray, n_words: int,
                        signatures: np.ndarray, angles: np.ndarray, scales: np.ndarray
                        ) -> HammingIndex:
        """The former in-memory build: a global lexsort of int64 copies of every word and
        image id, then every column gathered (about 70 bytes per posting at its peak).
        Kept as the reference `build` is tested and benchmarked against: the same index."""
        offsets = np.asarray(offsets, np.int64)
        n = len(offsets) - 1
        image = np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))
        img, word, tf = bow_vectors(words, offsets, n_words)
        df = np.bincount(word, minlength=n_words)
        with np.errstate(divide="ignore"):
            idf = np.where(df > 0, np.log(n / np.maximum(df, 1)), 0.0)
        norms = np.sqrt(np.bincount(img, weights=(tf * idf[word]) ** 2, minlength=n))
        inv = InvertedFile.from_postings(
            words, image, n_words, n,
            {"signature": np.asarray(signatures, np.uint64),
             "angle": np.asarray(angles, np.uint8), "scale": np.asarray(scales, np.uint8)})
        return cls(inv, idf.astype(np.float32), norms.astype(np.float32))

    @classmethod
    def build(cls, words: np.ndarray, offsets: np.ndarray, n_words: int,
              signatures: np.ndarray, angles: np.ndarray, scales: np.ndarray, *,
              folder: Path | None = None, block_features: int = BUILD_BLOCK,
              progress: Advance | None = None) -> HammingIndex:
        """From per-feature word ids, per-image `offsets` int64[N+1], packed signatures
        and uint8 angle / scale codes, streaming over them (they may be memory-mapped)
        `block_features` at a time in two passes (module doc of `invfile`); the arrays
        are `.npy` files in `folder` (see `arrays`), or in memory when None. `progress`
        moves by the images of each block in each pass (`invfile.build_steps`)."""
        offsets = np.asarray(offsets, np.int64)
        n = len(offsets) - 1
        check_lengths(offsets, words=words, signatures=signatures, angles=angles,
                      scales=scales)
        blocks = image_blocks(offsets, block_features)
        lengths = np.zeros(n_words, np.int64)  # pass 1: postings and images of each word
        df = np.zeros(n_words, np.int64)
        for *_, word, tf in block_vectors(words, offsets, n_words, blocks, progress):
            # a word's postings are its features: the sum of its term counts (exact)
            lengths += np.bincount(word, weights=tf, minlength=n_words).astype(np.int64)
            df += np.bincount(word, minlength=n_words)
        idf = idf_of(df, n)
        norms = new_array(folder, "norms", np.float32, (n,))

        def postings() -> Iterator[PostingBlock]:  # pass 2: the features, and the norms
            for begin, end, image, word, tf in block_vectors(words, offsets, n_words, blocks,
                                                             progress):
                norms[begin:end] = np.sqrt(np.bincount(
                    image, weights=(tf * idf[word]) ** 2, minlength=end - begin))
                lo, hi = int(offsets[begin]), int(offsets[end])
                feature_image = np.repeat(np.arange(begin, end, dtype=np.int64),
                                          np.diff(offsets[begin:end + 1]))
                yield (read_rows(words, lo, hi), feature_image,
                       {"signature": read_rows(signatures, lo, hi),
                        "angle": read_rows(angles, lo, hi),
                        "scale": read_rows(scales, lo, hi)})

        inv = InvertedFile.from_blocks(lengths, postings(), n, POSTING_COLUMNS, folder)
        stored_idf = new_array(folder, "idf", np.float32, (n_words,))
        stored_idf[:] = idf
        return cls(inv, stored_idf, norms)

    def arrays(self) -> dict[str, np.ndarray]:
        """The index as artifact values (`from_arrays`): the inverted file's arrays,
        `idf` and `norms`."""
        return {**self.invfile.arrays(), "idf": self.idf, "norms": self.norms}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, Any]) -> HammingIndex:
        """The index `arrays` describes (memory-mapped arrays stay mapped)."""
        norms = arrays["norms"]
        return cls(InvertedFile.from_arrays(arrays, len(norms), POSTING_COLUMNS),
                   arrays["idf"], norms)

    @property
    def n_images(self) -> int:
        return self.invfile.n_images

    @property
    def nbytes(self) -> int:
        return self.invfile.nbytes + int(self.idf.nbytes + self.norms.nbytes)

    def query_norm(self, words: np.ndarray) -> float:
        """L2 norm of the query's tf-idf BoW vector (database idf)."""
        counts = np.bincount(np.asarray(words, np.int64), minlength=self.invfile.n_words)
        return float(np.sqrt(np.sum((counts * self.idf.astype(np.float64)) ** 2)))

    def scores(self, words: np.ndarray, signatures: np.ndarray, angles: np.ndarray,
               scales: np.ndarray, settings: ScanSettings) -> tuple[np.ndarray, int]:
        """Scores float32[N] of one query (its features' words, signatures, angle and
        scale codes) against every database image, and the number of postings scanned."""
        s = settings
        n = self.n_images
        words = np.asarray(words, np.int64)
        pos, src = self.invfile.gather(words)
        scanned = len(pos)
        out = np.zeros(n, np.float32)
        if scanned == 0:
            return out, 0
        dist = np.bitwise_count(self.invfile.columns["signature"][pos]
                                ^ np.asarray(signatures, np.uint64)[src])
        keep = dist <= s.hamming_threshold
        pos, src, dist = pos[keep], src[keep], dist[keep]
        if len(pos) == 0:
            return out, scanned
        # Work on the images that got a vote only (a few of N after HE filtering).
        image = self.invfile.image_ids[pos].astype(np.int64)
        if len(image) * 16 < n:  # few votes: sort them rather than touch all N images
            hit, image = np.unique(image, return_inverse=True)
        else:
            hit = np.flatnonzero(np.bincount(image, minlength=n))
            local = np.empty(n, np.int64)
            local[hit] = np.arange(len(hit))
            image = local[image]
        weight = self.idf[words[src]].astype(np.float64) ** 2
        if s.hamming_weighting == "gaussian":
            weight = weight * np.exp(-(dist.astype(np.float64) ** 2) / s.gaussian_sigma ** 2)
        if s.burstiness:
            # matches of each query feature in each image, of each database feature overall
            _, inv_q, cnt_q = np.unique(src * len(hit) + image, return_inverse=True,
                                        return_counts=True)
            _, inv_d, cnt_d = np.unique(pos, return_inverse=True, return_counts=True)
            weight = weight / np.sqrt(cnt_q[inv_q] * cnt_d[inv_d])
        if s.wgc:
            total = self._wgc(image, len(hit), pos, src, weight, angles, scales, s)
        else:
            total = np.bincount(image, weights=weight, minlength=len(hit))
        denom = self.query_norm(words) * self.norms[hit].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[hit] = np.where(denom > 0, total / denom, 0.0)
        return out, scanned

    def _wgc(self, image: np.ndarray, n: int, pos: np.ndarray, src: np.ndarray,
             weight: np.ndarray, angles: np.ndarray, scales: np.ndarray, s: ScanSettings
             ) -> np.ndarray:
        """min(peak of the angle-difference histogram, peak of the log-scale-difference
        histogram) of each of `n` images (`image` holds 0..n-1), float64[n] (Sec. 4)."""
        cols = self.invfile.columns
        abin = _angle_bin(np.asarray(angles, np.int64)[src]
                          - cols["angle"][pos].astype(np.int64), s.angle_bins)
        # Log-scale difference in bins of scale_bin_octaves, centred on no change.
        ds = (np.asarray(scales, np.int64)[src] - cols["scale"][pos].astype(np.int64))
        step = SCALE_CODES_PER_OCTAVE * s.scale_bin_octaves
        sbin = np.floor(ds / step + 0.5).astype(np.int64) + s.scale_bins // 2
        np.clip(sbin, 0, s.scale_bins - 1, out=sbin)
        h_a = np.bincount(image * s.angle_bins + abin, weights=weight,
                          minlength=n * s.angle_bins).reshape(n, s.angle_bins)
        h_s = np.bincount(image * s.scale_bins + sbin, weights=weight,
                          minlength=n * s.scale_bins).reshape(n, s.scale_bins)
        h_a = _smooth(h_a, s.histogram_smoothing, circular=True)
        h_s = _smooth(h_s, s.histogram_smoothing, circular=False)
        turns = WGC_PRIOR_TURNS[s.wgc_prior]
        if turns:  # the "Bayesian" premultiplication of ivfgeo, after the smoothing
            prior = np.ones(s.angle_bins)
            favoured = _angle_bin(np.array(turns) * (ANGLE_LEVELS // 4), s.angle_bins)
            prior[favoured] = s.wgc_prior_weight
            h_a = h_a * prior
        return np.minimum(h_a.max(axis=1), h_s.max(axis=1))

    def search(self, queries: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
               k: int, settings: ScanSettings, progress: Any = None
               ) -> tuple[np.ndarray, np.ndarray, int]:
        """Top-k (ranks int64[nq, k'], scores float32[nq, k'], postings scanned) of queries
        given as (words, signatures, angle codes, scale codes); ties to the lower index.
        The pages of a memory-mapped index read by a query are released after it."""
        nq = len(queries)
        k = min(int(k), self.n_images)
        ranks = np.zeros((nq, k), np.int64)
        top = np.zeros((nq, k), np.float32)
        scanned = 0
        for qi, q in enumerate(queries):
            scores, m = self.scores(*q, settings)
            self.invfile.release()
            scanned += m
            if k:
                r, t = topk_from_scores(scores[None], k)
                ranks[qi], top[qi] = r[0], t[0]
            if progress is not None:
                progress(1)
        return ranks, top, scanned


# -- the method -----------------------------------------------------------------------


class HammingEmbeddingMethod(SiftVocabularyMethod):
    """Train / load the Hamming embedding of the current vocabulary, and compute the
    (signature, angle code, scale code) of every feature of an image list, cached."""

    stages: ClassVar[Mapping[str, Stage]] = HAMMING_STAGES

    def __init__(self, config: Any = None, context: Any = None) -> None:
        super().__init__(config, context)
        self._embedding: HammingEmbedding | None = None
        self._embedding_id = ""

    def ensure_embedding(self) -> HammingEmbedding:
        """P and the thresholds, trained on the vocabulary's training sample (cached)."""
        if self._embedding is not None:
            return self._embedding
        if self._vocabulary is None or self._vocabulary_training is None:
            raise RuntimeError(f"{self.name}: no vocabulary yet (call fit/index first)")
        cfg = self.config
        images, trained_on = self._vocabulary_training
        vocab = self._vocabulary

        def compute() -> dict[str, Any]:
            feats = self.features(trained_on, images)
            idx = sample_indices(feats.n_features, training_sample_size(
                vocab.size, cfg.training_descriptors_per_word, feats.n_features),
                self.context.seed)
            x = self.vectors(feats.descriptors[idx])
            words = vocab.quantize(x)
            emb = train_embedding(x, words, vocab.size, cfg.signature_bits,
                                  self.context.seed, cfg.min_median_samples)
            counts = np.bincount(words.astype(np.int64), minlength=vocab.size)
            return {"projection": emb.projection, "thresholds": emb.thresholds,
                    "sparse_words": int((counts < cfg.min_median_samples).sum())}

        art = self.cached(EMBEDDING_STAGE, compute,
                          inputs={"vocabulary": self._vocabulary_id,
                                  "features": self.features_id(images)})
        self._embedding = HammingEmbedding(np.asarray(art["projection"], np.float32),
                                           np.asarray(art["thresholds"], np.float32))
        self._embedding_id = art.id
        self._info["he_words_with_fallback_thresholds"] = int(art["sparse_words"])
        return self._embedding

    def embedded(self, role: str, images: Sequence[Image | Query], words: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(signatures uint64[F], angle codes uint8[F], scale codes uint8[F]), cached;
        `words` are the features' words under the current vocabulary (`words`)."""
        emb = self.ensure_embedding()

        def compute() -> dict[str, Any]:
            feats = self.features(role, images)
            sig = emb.signatures(feats.descriptors, words, prepare=self.vectors)
            # WGC's codes, from the stored ones (keypoints.wgc_angle_codes, scale_codes)
            return {"signatures": sig, "angles": wgc_angle_codes(feats.angle_code),
                    "scales": np.asarray(feats.scale_code, np.uint8)}

        art = self.cached("signatures", compute,
                          inputs={"embedding": self._embedding_id,
                                  "vocabulary": self._vocabulary_id,
                                  "features": self.features_id(images)})
        return (np.asarray(art["signatures"], np.uint64), np.asarray(art["angles"], np.uint8),
                np.asarray(art["scales"], np.uint8))


class HeWgcMethod(HammingEmbeddingMethod):
    """Hamming embedding + weak geometric consistency over an inverted file."""

    name = "he-wgc"
    description = ("HE+WGC (Jegou et al. 2008): 64-bit Hamming embedding, threshold 22, "
                   "weak geometric consistency in the inverted-file scan")
    Config = HeWgcConfig

    def __init__(self, config: Any = None, context: Any = None) -> None:
        super().__init__(config, context)
        self._index: HammingIndex | None = None

    def index(self, database: Sequence[Image]) -> None:
        """Build (or load from the cache, memory-mapped) the database's inverted file."""
        words, offsets = self.prepare_database(database, keep_features=True)
        self.ensure_embedding()
        n_words = self._vocabulary.size

        def write(folder: Path | None) -> dict[str, np.ndarray]:
            sig, ang, sca = self.embedded("database", database, words)
            self.forget_features()
            with self.inverted_file_bar(len(offsets) - 1) as bar:
                return HammingIndex.build(words, offsets, n_words, sig, ang, sca,
                                          folder=folder, progress=bar).arrays()

        art = self.cached_files(INDEX_STAGE, write,
                                inputs={"embedding": self._embedding_id,
                                        "vocabulary": self._vocabulary_id,
                                        "features": self.features_id(database)})
        self.forget_features()
        self._index = HammingIndex.from_arrays(art)
        inv = self._index.invfile
        self._info.update({
            "postings": int(inv.n_postings),
            "bytes_per_posting": round((inv.image_ids.itemsize + sum(
                c.itemsize for c in inv.columns.values())), 2),
        })

    def query_features(self, queries: Sequence[Query]) -> list[tuple[np.ndarray, ...]]:
        """Per query: (words, signatures, angle codes, scale codes)."""
        words, offsets = self.words("queries", queries)
        sig, ang, sca = self.embedded("queries", queries, words)
        self.forget_features()
        counts = np.diff(offsets)
        self._info["query_features"] = int(offsets[-1])
        self._info["queries_without_features"] = int((counts == 0).sum())
        return [(words[a:b], sig[a:b], ang[a:b], sca[a:b])
                for a, b in zip(offsets[:-1], offsets[1:], strict=True)]

    def query(self, queries: Sequence[Query], k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._index is None:
            raise RuntimeError(f"{self.name}: index() must run before query()")
        per_query = self.query_features(queries)
        with self.context.progress.task(f"{self.name}: search", total=len(per_query)) as bar:
            ranks, top, scanned = self._index.search(per_query, k, ScanSettings.of(self.config),
                                                     progress=bar)
        self._info["postings_scanned"] = int(scanned)
        return ranks, top

    def index_bytes(self) -> int | None:
        return None if self._index is None else self._index.nbytes
