"""Shortlist re-ranking by spatial verification of tentative SIFT matches: the shared
machinery of Spatial Coding, Geometric Coding and COP.

A verification method ranks the database with a first stage (`first_stage`: tf-idf BoW,
`bow.BowMethod`'s index, or HE+WGC, `hamming.HeWgcMethod`'s), takes the top `shortlist`
images (1000 by default), and for each of them

1. forms the tentative matches: pairs (query feature, database feature) quantized to the
   same visual word (`tentative_matches`);
2. keeps the matches its verifier accepts (`VerificationMethod.inliers`, one per
   method: spatial coding, geometric coding, COP);
3. scores the image by the number of matches kept.

The shortlist is re-ranked by that count, ties by the first-stage score, then by the
lower database index; images below the shortlist keep their first-stage order below
it. Returned scores follow the ranking: for a shortlisted image, kept matches + s/2, and
for the others s/2 - 1, where s is the first-stage score divided by the query's best
first-stage score (in [0, 1]).

Repeated visual words (open in the papers, which describe one-to-one matches): every
pair of features sharing a word is a tentative match (many-to-many), except that a
word giving more than `max_pairs_per_word` pairs (occurrences in the query x in the
image; 16 by default) contributes none — such bursts (repeated windows, foliage) make
combinatorially many pairs of which at most one per feature can be right, and they
dominate the O(m^2) verification. If more than `max_matches` (1000) remain, the ones
from the least repeated words are kept (then by query feature order).

What the papers fix and what is a choice here. The full texts of the three verification
papers could not be read (their abstracts, a patent's claims and the seed paper's Sec. 4.4
could): the shortlist size, the tentative-match rule (one-to-one or many-to-many), the
stopping rule, the final score and the vocabulary size are not found for any of them, and
are the documented choices of this module and of each verifier's module. Found: Mei et al.
2018 (Sec. 4.4) rotate the query 20 times by 18° for spatial coding; the vocabulary shared
with the first stage is 20,000 words (`vocabulary`).

Measured behaviour on real multi-view photographs (the folder of 95 photographs of 17
objects and scenes that `results/README.md` describes, every image querying the others,
defaults): COP and geometric coding end above their `bow` first stage, spatial coding
slightly below it. Per query, the verifiers gain on buildings and near-planar scenes and
lose on small 3D objects photographed from around them (a Buddha head, a cake slice): true
matches change relative position with the viewpoint, and the zero-tolerance removal keeps
few of them. Against a Buddha-head query, spatial coding keeps 4 to 17 matches of each
true image and 6 to 10 of the best unrelated ones (which have up to 135 tentative matches
and the best of 20 query rotations); geometric coding keeps 2 to 15 against 4 to 5. The
count then no longer separates right from wrong, and the first stage's order is lost.

How a query is verified (the result is that of verifying image by image, which
`rerank_query(..., reference=True)` still does, for tests and benchmarks):

- the tentative matches of the whole shortlist are formed at once (`shortlist_matches`: the
  images' features looked up among the query's words, one lexsort into the per-image order);
- each verifier counts the matches it keeps in many images per call (`inlier_counts`:
  `spatial_coding_counts`, `geometric_coding_counts`, `cop_counts`, array code over images
  of similar match counts; the base class loops over `inliers`);
- when fewer than `shortlist` images are ranked (k < shortlist), images are verified in
  order of decreasing tentative-match count, and those that cannot enter the top k are
  skipped (`verify_shortlist` gives the argument); with the default full ranking nothing
  is skipped;
- queries are verified in `context.workers` processes (`irbench.core.parallel`); the
  database's words and geometry are written once to a temporary folder the workers map into
  memory, and each query ships only its own features and shortlist. Each query's result
  depends on that query alone, so the rankings do not depend on the number of workers.

What a verifier holds of the database: nothing per feature in memory. Its words sorted
by (image, word) and their feature order are a cached stage (`word-order`, 12 bytes per
feature, built a block of images at a time: `database_word_order`), and the geometry is
the SIFT features' own quantised columns (`StoredGeometry`, 7 bytes per feature), both
memory-mapped: a query reads the rows of its shortlist only. The geometry the verifiers
see is decoded from the stored codes (positions in steps of 2^e pixels, e per image so
that its longer side fits 16 bits: 1/128 px at 320 px; 1/65,536 of a turn; 1/16 of an
octave: `keypoints`); README "Compact SIFT storage" measures what that does to their mAP.

`match_hamming_threshold` (off by default: 64 >= `signature_bits`) keeps only the pairs
whose Hamming-embedding signatures (`hamming.HammingEmbedding`) are within that many
bits, before the cap: not in the verification papers, but it removes most false pairs
when the vocabulary is small (a few hundred words on a small collection give thousands
of pairs per image, nearly all false).
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from irbench.core.config import param
from irbench.core.parallel import parallel_map
from irbench.core.search import topk_from_scores
from irbench.datasets.base import Image, Query
from irbench.errors import ConfigError
from irbench.methods.base import QUERY_STAGE, RunContext, Stage
from irbench.methods.sift.bow import TFIDF_STAGE
from irbench.methods.sift.hamming import (
    HAMMING_STAGES,
    INDEX_STAGE,
    HammingEmbeddingMethod,
    HammingIndex,
    HammingOptions,
    ScanSettings,
)
from irbench.methods.sift.invfile import (
    BUILD_BLOCK,
    TfIdfIndex,
    image_blocks,
    new_array,
    ranges,
    read_rows,
)
from irbench.methods.sift.keypoints import (
    SiftOptions,
    decode_angle,
    decode_scale,
    decode_xy,
)
from irbench.methods.sift.vocabulary import VocabularyOptions

__all__ = [
    "VerificationOptions",
    "VerificationConfig",
    "Geometry",
    "StoredGeometry",
    "database_word_order",
    "tentative_matches",
    "shortlist_matches",
    "word_multiplicity",
    "relative_scores",
    "rerank",
    "padded_groups",
    "size_groups",
    "VerificationMethod",
]


PRUNE_CHUNK = 50
"""With pruning, images are verified this many (or k) at a time between two prunings."""


@dataclass(frozen=True)
class VerificationOptions:
    """Config fields shared by the verification (re-ranking) methods."""

    shortlist: int = param(
        1000, "re-rank the top this many images of the first stage; the rest keep their "
              "first-stage order below them", minimum=1, stage=QUERY_STAGE)
    first_stage: str = param(
        "bow", "ranking whose shortlist is verified: 'bow' (tf-idf) or 'he-wgc' (uses the "
               "Hamming / WGC fields)", choices=("bow", "he-wgc"), stage=QUERY_STAGE)
    max_pairs_per_word: int = param(
        16, "a visual word giving more tentative matches than this (occurrences in the "
            "query x in the image) gives none", minimum=1, stage=QUERY_STAGE)
    max_matches: int = param(
        1000, "verify at most this many tentative matches per image pair (those of the "
              "least repeated words first)", minimum=1, stage=QUERY_STAGE)
    match_hamming_threshold: int = param(
        64, "keep only tentative matches whose Hamming-embedding signatures (the HE fields) "
            "differ in at most this many bits; >= signature_bits = no filter (the papers: "
            "every pair sharing a visual word)", minimum=0, stage=QUERY_STAGE)


@dataclass(frozen=True)
class VerificationConfig(VerificationOptions, HammingOptions, VocabularyOptions, SiftOptions):
    """SIFT, vocabulary, Hamming (for first_stage='he-wgc') and verification fields."""


@dataclass
class Geometry:
    """Keypoint geometry of a feature list: x, y (pixels, y down), angle (radians, OpenCV's
    clockwise convention), scale (OpenCV size, pixels); arrays of equal length."""

    x: np.ndarray
    y: np.ndarray
    angle: np.ndarray
    scale: np.ndarray

    def take(self, index: np.ndarray) -> Geometry:
        """The rows `index`, as float64."""
        return Geometry(*(np.asarray(a[index], np.float64)
                          for a in (self.x, self.y, self.angle, self.scale)))

    @property
    def xy(self) -> np.ndarray:
        return np.stack([self.x, self.y], axis=1)

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class StoredGeometry:
    """Keypoint geometry as the SIFT features store it (`keypoints` module docstring:
    uint16 positions in steps of 2^e pixels per image, uint16 orientation and uint8 scale
    codes, 7 bytes per feature), usually memory-mapped: `take` reads and decodes only the
    rows asked for, so a verifier touches the geometry of its shortlist alone. `offsets`
    are the images' feature ranges and `xy_exponent` their e."""

    xq: Any
    yq: Any
    angle_code: Any
    scale_code: Any
    offsets: np.ndarray
    xy_exponent: np.ndarray

    def take(self, index: np.ndarray) -> Geometry:
        """The rows `index`, decoded, as float64."""
        index = np.asarray(index, np.int64)
        image = np.searchsorted(self.offsets, index, side="right") - 1
        e = np.asarray(self.xy_exponent)[image]
        return Geometry(*(np.asarray(v, np.float64) for v in (
            decode_xy(self.xq[index], e), decode_xy(self.yq[index], e),
            decode_angle(self.angle_code[index]), decode_scale(self.scale_code[index]))))

    def arrays(self) -> dict[str, Any]:
        return {"xq": self.xq, "yq": self.yq, "angle_code": self.angle_code,
                "scale_code": self.scale_code, "xy_exponent": self.xy_exponent}

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.arrays().values()))

    def __len__(self) -> int:
        return len(self.xq)


WORD_ORDER_STAGE = "word-order"
"""The cached stage of the database's words sorted by (image, word) and the feature index
of each (`database_word_order`), read memory-mapped by every verifier."""


def database_word_order(words: Any, offsets: np.ndarray, folder: Path | None = None,
                        block_features: int = BUILD_BLOCK) -> dict[str, np.ndarray]:
    """{"sorted_words": uint32[F], "order": int64[F]}: each image's words in increasing
    order (stable: equal words keep their feature order) and the feature index of each,
    as one lexsort by (image, word) orders them; built a block of images at a time into
    `folder` (.npy files, memory-mapped) or in memory when `folder` is None."""
    offsets = np.asarray(offsets, np.int64)
    n = int(offsets[-1])
    sorted_words = new_array(folder, "sorted_words", np.uint32, (n,))
    order = new_array(folder, "order", np.int64, (n,))
    for begin, end in image_blocks(offsets, block_features):
        a, b = int(offsets[begin]), int(offsets[end])
        w = read_rows(words, a, b).astype(np.int64)
        image = np.repeat(np.arange(end - begin, dtype=np.int64),
                          np.diff(offsets[begin:end + 1]))
        local = np.lexsort((w, image))
        sorted_words[a:b] = w[local]
        order[a:b] = local + a
    return {"sorted_words": sorted_words, "order": order}


def word_multiplicity(words: np.ndarray) -> np.ndarray:
    """How often each entry's word occurs in `words`, int64[n]."""
    _, inverse, counts = np.unique(np.asarray(words, np.int64), return_inverse=True,
                                   return_counts=True)
    return counts[inverse]


def tentative_matches(query_words: np.ndarray, db_sorted_words: np.ndarray,
                      db_order: np.ndarray, max_pairs_per_word: int, max_matches: int,
                      query_multiplicity: np.ndarray | None = None,
                      hamming: tuple[np.ndarray, np.ndarray, int] | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of features sharing a visual word: (query feature indices, database feature
    indices), int64[m] each, in query feature order. `db_sorted_words` are the database
    image's words in ascending order and `db_order` the feature index of each;
    `query_multiplicity` is `word_multiplicity(query_words)` (computed when None).
    `hamming` = (query signatures, database signatures indexed like `db_order`'s values,
    threshold) keeps only pairs within the threshold, before the `max_matches` cap.
    Rules for repeated words in the module doc."""
    qw = np.asarray(query_words, np.int64)
    lo = np.searchsorted(db_sorted_words, qw, side="left")
    hi = np.searchsorted(db_sorted_words, qw, side="right")
    n_db = hi - lo
    if query_multiplicity is None:
        query_multiplicity = word_multiplicity(qw)
    pairs_of_word = query_multiplicity * n_db
    ok = (n_db > 0) & (pairs_of_word <= max_pairs_per_word)
    qi = np.flatnonzero(ok)
    counts = n_db[qi]
    q_idx = np.repeat(qi, counts)
    d_idx = np.asarray(db_order, np.int64)[ranges(lo[qi], counts)]
    repeats = np.repeat(pairs_of_word[qi], counts)
    if hamming is not None:
        q_sig, d_sig, threshold = hamming
        close = np.bitwise_count(q_sig[q_idx] ^ d_sig[d_idx]) <= threshold
        q_idx, d_idx, repeats = q_idx[close], d_idx[close], repeats[close]
    if len(q_idx) > max_matches:
        keep = np.argsort(repeats, kind="stable")[:max_matches]
        keep.sort()
        q_idx, d_idx = q_idx[keep], d_idx[keep]
    return q_idx, d_idx


def shortlist_matches(query_words: np.ndarray, images: np.ndarray, db_offsets: np.ndarray,
                      db_sorted_words: np.ndarray, db_order: np.ndarray,
                      max_pairs_per_word: int, max_matches: int,
                      hamming: tuple[np.ndarray, np.ndarray, int] | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`tentative_matches` of one query against many database images at once: (query
    feature indices, database feature indices, offsets int64[len(images) + 1]); image
    j's matches are the slice offsets[j]:offsets[j + 1], in the same order as
    `tentative_matches` on that image alone. `db_sorted_words` are the database features'
    words sorted by (image, word), image i's being the slice db_offsets[i]:db_offsets[i+1],
    and `db_order` the feature index of each. The images' features are looked up in the
    query's sorted words (one `searchsorted` into the small query), the pairs are expanded
    and put in `tentative_matches`' order by one lexsort."""
    qw = np.asarray(query_words, np.int64)
    images = np.asarray(images, np.int64)
    n_images = len(images)
    q_order = np.argsort(qw, kind="stable")
    q_sorted = qw[q_order]
    starts = np.asarray(db_offsets, np.int64)[images]
    lengths = np.asarray(db_offsets, np.int64)[images + 1] - starts
    pos = ranges(starts, lengths)  # the images' features, sorted by (image, word)
    image = np.repeat(np.arange(n_images, dtype=np.int64), lengths)
    word = np.asarray(db_sorted_words[pos], np.int64)  # reads the shortlist's rows only
    lo = np.searchsorted(q_sorted, word, side="left")
    n_query = np.searchsorted(q_sorted, word, side="right") - lo
    hit = np.flatnonzero(n_query)
    pos, image, word, lo, n_query = pos[hit], image[hit], word[hit], lo[hit], n_query[hit]
    # n_db: features of the same word in the same image (a run of equal (image, word))
    new_run = np.ones(len(pos), bool)
    new_run[1:] = (image[1:] != image[:-1]) | (word[1:] != word[:-1])
    run = np.cumsum(new_run) - 1
    n_db = np.bincount(run)[run] if len(run) else np.zeros(0, np.int64)
    pairs_of_word = n_query * n_db
    ok = np.flatnonzero(pairs_of_word <= max_pairs_per_word)
    pos, image, lo, n_query, pairs_of_word = (pos[ok], image[ok], lo[ok], n_query[ok],
                                              pairs_of_word[ok])
    q_idx = q_order[ranges(lo, n_query)]
    pos = np.repeat(pos, n_query)
    image = np.repeat(image, n_query)
    repeats = np.repeat(pairs_of_word, n_query)
    order = np.lexsort((pos, q_idx, image))  # per image: query feature, then database order
    q_idx, image, repeats = q_idx[order], image[order], repeats[order]
    d_idx = np.asarray(db_order[pos[order]], np.int64)
    if hamming is not None:
        q_sig, d_sig, threshold = hamming
        close = np.bitwise_count(q_sig[q_idx] ^ d_sig[d_idx]) <= threshold
        q_idx, d_idx, image, repeats = q_idx[close], d_idx[close], image[close], repeats[close]
    sizes = np.bincount(image, minlength=n_images)
    over = sizes > max_matches
    if over.any():
        # each capped image: a stable argsort of its `repeats`, the first max_matches kept
        capped = np.flatnonzero(over[image])
        order = capped[np.lexsort((capped, repeats[capped], image[capped]))]
        capped_sizes = np.where(over, sizes, 0)
        first = np.cumsum(capped_sizes) - capped_sizes  # where each image starts in order
        rank = np.arange(len(order)) - first[image[order]]
        keep = np.ones(len(q_idx), bool)
        keep[order[rank >= max_matches]] = False
        q_idx, d_idx = q_idx[keep], d_idx[keep]
        sizes = np.minimum(sizes, max_matches)
    offsets = np.zeros(n_images + 1, np.int64)
    np.cumsum(sizes, out=offsets[1:])
    return q_idx, d_idx, offsets


def size_groups(sizes: np.ndarray, cells_per_image: Any, budget: int = 1 << 22
                ) -> list[np.ndarray]:
    """Indices of `sizes` (match counts m of images) in groups of similar m, ascending, for
    array code that pads a group to its largest m: a group's m grow by at most a tenth
    (plus 8) from its first, and its images x `cells_per_image(largest m)` stay within
    `budget` (one image per group at least)."""
    order = np.argsort(np.asarray(sizes), kind="stable")
    groups: list[np.ndarray] = []
    start = 0
    for end in range(1, len(order) + 1):
        if end < len(order):
            first, m = int(sizes[order[start]]), int(sizes[order[end]])
            if m <= first * 1.1 + 8 and (end + 1 - start) * cells_per_image(m) <= budget:
                continue
        groups.append(order[start:end])
        start = end
    return groups


def padded_groups(offsets: np.ndarray, images: np.ndarray, cells_per_image: Any,
                  budget: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """For each `size_groups` group of `images` (their matches are the rows
    offsets[j]:offsets[j + 1]): (the group's images, the rows of their matches padded to
    the group's largest m int64[B, width] (row 0 past an image's m), which of those are
    real bool[B, width]) — what array code over a group indexes its matches with."""
    sizes = np.diff(offsets)
    for group in size_groups(sizes[images], cells_per_image, budget=budget):
        chosen = images[group]
        starts, m = offsets[chosen], sizes[chosen]
        width = int(m.max())
        valid = np.arange(width) < m[:, None]
        yield chosen, np.where(valid, starts[:, None] + np.arange(width), 0), valid


def relative_scores(first_scores: np.ndarray) -> np.ndarray:
    """s: first-stage scores divided by the query's best, float64 (zeros when the best is
    not positive); `rerank`'s secondary key."""
    n = len(first_scores)
    best = float(first_scores.max()) if n else 0.0
    return np.asarray(first_scores, np.float64) / best if best > 0 else np.zeros(n)


def rerank(first_scores: np.ndarray, verified: np.ndarray, shortlist: np.ndarray, k: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """Final (ranks int64[k], scores float32[k]) of one query from its first-stage scores
    float[N], the shortlisted image indices and their verified match counts (ordering
    and scores as in the module doc)."""
    n = len(first_scores)
    s = relative_scores(first_scores)
    short = np.asarray(shortlist, np.int64)
    in_short = np.zeros(n, bool)
    in_short[short] = True
    primary = np.full(n, -1.0)
    primary[short] = np.asarray(verified, np.float64)
    # lexsort: last key first; ascending, so negate (index ascending breaks ties)
    order = np.lexsort((np.arange(n), -s, -primary))
    order = order[:k]
    final = np.where(in_short[order], primary[order] + s[order] / 2, s[order] / 2 - 1)
    return order.astype(np.int64), final.astype(np.float32)


class VerificationMethod(HammingEmbeddingMethod):
    """Base of the shortlist verification methods: subclasses set `name`, `description`,
    `Config` (inheriting `VerificationConfig` and their own options) and `inliers`."""

    Config = VerificationConfig
    stages: ClassVar[Mapping[str, Stage]] = {
        **HAMMING_STAGES, WORD_ORDER_STAGE: Stage(after=("words",), shared=True)}
    Options: ClassVar[type | None] = None
    """The verifier's own options dataclass (its fields are part of `Config`); `__init__`
    builds `self.options` from the config's values."""

    def __init__(self, config: Any = None, context: Any = None) -> None:
        super().__init__(config, context)
        cfg = self.config
        self.options = (None if self.Options is None else self.Options(
            **{f.name: getattr(cfg, f.name) for f in dataclasses.fields(self.Options)}))
        if cfg.shortlist < 1:
            raise ConfigError(f"shortlist must be >= 1, got {cfg.shortlist}")
        if cfg.first_stage not in ("bow", "he-wgc"):
            raise ConfigError(f"first_stage must be 'bow' or 'he-wgc', got {cfg.first_stage!r}")
        if cfg.max_pairs_per_word < 1 or cfg.max_matches < 1:
            raise ConfigError("max_pairs_per_word and max_matches must be >= 1")
        self._first: TfIdfIndex | HammingIndex | None = None
        self._db_geometry: Geometry | StoredGeometry | None = None
        self._db_offsets = np.zeros(1, np.int64)
        self._db_sorted_words = np.zeros(0, np.int64)
        self._db_order = np.zeros(0, np.int64)
        self._db_signatures: np.ndarray | None = None
        self._filters_by_hamming = cfg.match_hamming_threshold < cfg.signature_bits

    # -- what a verifier implements ---------------------------------------------------

    def inliers(self, query: Geometry, database: Geometry) -> np.ndarray:
        """bool[m]: which of the m tentative matches (row i of `query` matches row i of
        `database`) are geometrically consistent."""
        raise NotImplementedError

    def inlier_counts(self, query: Geometry, database: Geometry, offsets: np.ndarray
                      ) -> np.ndarray:
        """int64[n]: how many matches `inliers` keeps in each of n images, whose matches are
        the rows offsets[j]:offsets[j + 1]. This loop over `inliers` is the reference;
        the verifiers override it with array code over many images at once."""
        out = np.zeros(len(offsets) - 1, np.int64)
        for j, (a, b) in enumerate(zip(offsets[:-1], offsets[1:], strict=True)):
            if b > a:
                rows = np.arange(a, b)
                out[j] = np.count_nonzero(self.inliers(query.take(rows), database.take(rows)))
        return out

    # -- the contract -----------------------------------------------------------------

    def index(self, database: Sequence[Image]) -> None:
        words, offsets = self.prepare_database(database, keep_features=True)
        cfg = self.config
        self._db_signatures = None
        if cfg.first_stage == "he-wgc" or self._filters_by_hamming:
            sig, ang, sca = self.embedded("database", database, words)
            if self._filters_by_hamming:
                self._db_signatures = sig
        n_words = self._vocabulary.size
        inputs = {"vocabulary": self._vocabulary_id, "features": self.features_id(database)}
        # the first stage's inverted file, as he-wgc and bow store it (the same shared
        # stages: memory-mapped, and built once for every method with these fields)
        if cfg.first_stage == "he-wgc":
            def write(folder: Path | None) -> dict[str, Any]:
                with self.inverted_file_bar(len(offsets) - 1) as bar:
                    return HammingIndex.build(words, offsets, n_words, sig, ang, sca,
                                              folder=folder, progress=bar).arrays()

            self._first = HammingIndex.from_arrays(self.cached_files(
                INDEX_STAGE, write, inputs={"embedding": self._embedding_id, **inputs}))
        else:
            def write(folder: Path | None) -> dict[str, Any]:
                with self.inverted_file_bar(len(offsets) - 1) as bar:
                    return TfIdfIndex.build(words, offsets, n_words, folder=folder,
                                            progress=bar).arrays()

            self._first = TfIdfIndex.from_arrays(self.cached_files(
                TFIDF_STAGE, write, inputs=inputs))
        feats = self.features("database", database)
        self.forget_features()
        order = self.cached_files(
            WORD_ORDER_STAGE, lambda folder: database_word_order(words, offsets, folder),
            inputs=inputs)
        self.load_index(self._first, _geometry(feats), words, offsets,
                        word_order=(order["sorted_words"], order["order"]))
        self._info["postings"] = int(self._first.invfile.n_postings)

    def load_index(self, first: TfIdfIndex | HammingIndex,
                   geometry: Geometry | StoredGeometry, words: np.ndarray,
                   offsets: np.ndarray,
                   word_order: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Install a first-stage index and the database's keypoint geometry, words and
        per-image `offsets` (what `index` builds; benchmarks pass synthetic ones).
        `word_order` is (sorted words, feature order) as `database_word_order` makes
        them (the stored, memory-mapped ones); made in memory from `words` when None."""
        self._first = first
        self._db_geometry = geometry
        self._db_offsets = np.asarray(offsets, np.int64)
        if word_order is None:
            made = database_word_order(words, self._db_offsets)
            word_order = (made["sorted_words"], made["order"])
        self._db_sorted_words, self._db_order = word_order

    def _first_stage_scores(self, queries: Sequence[Query], words: np.ndarray,
                            offsets: np.ndarray) -> list[np.ndarray]:
        if isinstance(self._first, HammingIndex):
            sig, ang, sca = self.embedded("queries", queries, words)
            settings = ScanSettings.of(self.config)
            return [self._first.scores(words[a:b], sig[a:b], ang[a:b], sca[a:b], settings)[0]
                    for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
        dense = self._first.scores(words, offsets)
        return list(dense)

    def query(self, queries: Sequence[Query], k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._first is None or self._db_geometry is None:
            raise RuntimeError(f"{self.name}: index() must run before query()")
        words, offsets = self.words("queries", queries)
        q_geometry = _geometry(self.features("queries", queries))
        first = self._first_stage_scores(queries, words, offsets)
        q_signatures = (self.embedded("queries", queries, words)[0]
                        if self._filters_by_hamming else None)
        self.forget_features()
        n = self._first.n_images
        k = min(int(k), n)
        depth = min(self.config.shortlist, n)
        nq = len(queries)
        shortlists = [self.shortlist(scores) for scores in first]
        tasks = []
        for qi in range(nq):
            a, b = int(offsets[qi]), int(offsets[qi + 1])
            tasks.append((words[a:b], q_geometry.take(np.arange(a, b)), shortlists[qi][0],
                          shortlists[qi][1], k,
                          None if q_signatures is None else q_signatures[a:b]))
        description = f"{self.name}: verify top {depth}"
        workers = min(int(self.context.workers), nq)
        if workers > 1:
            with tempfile.TemporaryDirectory(prefix="irbench-verify-") as folder:
                self._share_database(Path(folder))
                spec = (type(self), self.config, folder)
                results = parallel_map(_verify_in_worker, [(spec, t) for t in tasks],
                                       workers=workers, progress=self.context.progress,
                                       description=description, chunksize=1)
        else:
            results = []
            with self.context.progress.task(description, total=nq) as advance:
                for task in tasks:
                    results.append(self.verify_shortlist(*task))
                    advance(1)
        ranks = np.zeros((nq, k), np.int64)
        top = np.zeros((nq, k), np.float32)
        totals = np.zeros(4, np.int64)
        for qi, (counts, stats) in enumerate(results):
            ranks[qi], top[qi] = rerank(first[qi], counts, shortlists[qi][0], k)
            totals += stats
        self._info.update({"verified_pairs": int(totals[0] - totals[3]),
                           "tentative_matches": int(totals[1]),
                           "kept_matches": int(totals[2]), "shortlist_used": depth})
        if totals[3]:
            self._info["pruned_pairs"] = int(totals[3])
        return ranks, top

    def shortlist(self, first_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the shortlisted images int64[S], best first-stage score first, and their
        `relative_scores`)."""
        n = len(first_scores)
        short = topk_from_scores(first_scores[None], min(self.config.shortlist, n))[0][0]
        return short, relative_scores(first_scores)[short]

    def rerank_query(self, words: np.ndarray, geometry: Geometry, first_scores: np.ndarray,
                     k: int, signatures: np.ndarray | None = None, reference: bool = False
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One query: verify its first-stage shortlist and re-rank (`signatures`: the
        query's HE signatures, needed when matches are filtered by Hamming distance).
        Returns (ranks int64[k], scores float32[k], [pairs verified, tentative matches,
        matches kept]). `reference=True` verifies image by image with `inliers` (the
        straightforward form, kept to check `verify_shortlist` against)."""
        shortlist, relative = self.shortlist(first_scores)
        if reference:
            counts, stats = self._verify_one_by_one(words, geometry, shortlist, signatures)
        else:
            counts, stats = self.verify_shortlist(words, geometry, shortlist, relative, k,
                                                  signatures)
        ranks, scores = rerank(first_scores, counts, shortlist, k)
        return ranks, scores, np.array([stats[0] - stats[3], stats[1], stats[2]])

    def verify_shortlist(self, words: np.ndarray, geometry: Geometry, shortlist: np.ndarray,
                         relative: np.ndarray, k: int, signatures: np.ndarray | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
        """Verified match counts int64[S] of the shortlisted images (`relative`: their
        `relative_scores`) for a top-k re-ranking, and [images, tentative matches, matches
        kept, images pruned].

        The tentative matches of every shortlisted image are formed at once
        (`shortlist_matches`) and verified with `inlier_counts`, many images per call.
        When k < S, images are verified in order of decreasing tentative-match count and
        an image is skipped (pruned, count 0) once it cannot enter the top k. Why that
        cannot change the ranking: with k < S the top k are all shortlisted (`rerank`
        puts every shortlisted image above the rest) and are the k largest keys
        (count, s, -index); a verifier keeps at most the m tentative matches it is given,
        so (m, s, -index) bounds an image's key. Once k verified images have keys >= K
        and an unverified image's bound is < K, its true key is < K too (at least k
        images rank above it) and so is its key with count 0: the top k, their order and
        their scores are those of the full verification. Only the statistics differ
        (`kept_matches`, `verified_pairs`; `pruned_pairs` counts the skipped images)."""
        hamming = self._hamming(signatures)
        q_idx, d_idx, offsets = shortlist_matches(
            words, shortlist, self._db_offsets, self._db_sorted_words, self._db_order,
            self.config.max_pairs_per_word, self.config.max_matches, hamming)
        sizes = np.diff(offsets)
        n = len(shortlist)
        counts = np.zeros(n, np.int64)

        def verify(images: np.ndarray) -> None:
            rows = ranges(offsets[images], sizes[images])
            sub = np.zeros(len(images) + 1, np.int64)
            np.cumsum(sizes[images], out=sub[1:])
            counts[images] = self.inlier_counts(geometry.take(q_idx[rows]),
                                                self._db_geometry.take(d_idx[rows]), sub)

        pruned = 0
        if k <= 0 or k >= n:
            verify(np.arange(n))
        else:
            index = np.asarray(shortlist, np.int64)
            pending = np.lexsort((index, -relative, -sizes))  # best bound first
            chunk = max(k, PRUNE_CHUNK)
            done = np.zeros(0, np.int64)
            while len(pending):
                step, pending = pending[:chunk], pending[chunk:]
                verify(step)
                done = np.concatenate([done, step])
                if len(done) < k or not len(pending):
                    continue
                kth = done[np.lexsort((index[done], -relative[done], -counts[done]))[k - 1]]
                bound, rel, idx = sizes[pending], relative[pending], index[pending]
                c, r, i = counts[kth], relative[kth], index[kth]
                beaten = (bound < c) | ((bound == c) & ((rel < r) | ((rel == r) & (idx > i))))
                pruned += int(beaten.sum())
                pending = pending[~beaten]
        return counts, np.array([n, len(q_idx), int(counts.sum()), pruned], np.int64)

    def _verify_one_by_one(self, words: np.ndarray, geometry: Geometry, shortlist: np.ndarray,
                           signatures: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """`verify_shortlist` the straightforward way: per image, `tentative_matches` and
        `inliers`; no pruning."""
        hamming = self._hamming(signatures)
        counts = np.zeros(len(shortlist), np.int64)
        multiplicity = word_multiplicity(words)
        matches = 0
        for j, d in enumerate(shortlist):
            q_idx, d_idx = self._matches(words, multiplicity, int(d), hamming)
            matches += len(q_idx)
            if len(q_idx):
                mask = self.inliers(geometry.take(q_idx), self._db_geometry.take(d_idx))
                counts[j] = int(np.count_nonzero(mask))
        return counts, np.array([len(shortlist), matches, int(counts.sum()), 0], np.int64)

    def _hamming(self, signatures: np.ndarray | None
                 ) -> tuple[np.ndarray, np.ndarray, int] | None:
        if not self._filters_by_hamming:
            return None
        if signatures is None or self._db_signatures is None:
            raise RuntimeError(f"{self.name}: match_hamming_threshold needs signatures")
        return signatures, self._db_signatures, self.config.match_hamming_threshold

    def _matches(self, query_words: np.ndarray, query_multiplicity: np.ndarray, image: int,
                 hamming: tuple[np.ndarray, np.ndarray, int] | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Tentative matches between the query and database image `image`; database
        feature indices are global (into the database feature arrays)."""
        a, b = int(self._db_offsets[image]), int(self._db_offsets[image + 1])
        cfg = self.config
        return tentative_matches(query_words, self._db_sorted_words[a:b], self._db_order[a:b],
                                 cfg.max_pairs_per_word, cfg.max_matches, query_multiplicity,
                                 hamming)

    # -- queries in worker processes --------------------------------------------------

    def _share_database(self, folder: Path) -> None:
        """Write what `verify_shortlist` reads of the database to `folder` (.npy files the
        workers map into memory: written once per `query`, not shipped per query)."""
        g = self._db_geometry
        arrays = {"offsets": self._db_offsets, "words": self._db_sorted_words,
                  "order": self._db_order}
        arrays.update(g.arrays() if isinstance(g, StoredGeometry) else
                      {"x": g.x, "y": g.y, "angle": g.angle, "scale": g.scale})
        if self._db_signatures is not None:
            arrays["signatures"] = self._db_signatures
        for name, a in arrays.items():  # a block at a time: the source may be mapped
            _save_blocks(folder / f"{name}.npy", a)

    def _attach_database(self, folder: Path) -> None:
        """Map the arrays `_share_database` wrote (read-only)."""
        def load(name: str) -> np.ndarray | None:
            path = folder / f"{name}.npy"
            return np.load(path, mmap_mode="r") if path.exists() else None

        self._db_offsets, self._db_sorted_words = load("offsets"), load("words")
        self._db_order = load("order")
        if (folder / "xq.npy").exists():
            self._db_geometry = StoredGeometry(load("xq"), load("yq"), load("angle_code"),
                                               load("scale_code"), self._db_offsets,
                                               load("xy_exponent"))
        else:
            self._db_geometry = Geometry(load("x"), load("y"), load("angle"), load("scale"))
        self._db_signatures = load("signatures")

    def index_bytes(self) -> int | None:
        if self._first is None or self._db_geometry is None:
            return None
        g = self._db_geometry
        geometry = (g.nbytes if isinstance(g, StoredGeometry) else
                    sum(a.nbytes for a in (g.x, g.y, g.angle, g.scale)))
        return int(self._first.nbytes + geometry + self._db_sorted_words.nbytes
                   + self._db_order.nbytes)


def _geometry(feats: Any) -> StoredGeometry:
    """The keypoint geometry of `Features` as stored (7 bytes per feature, mapped)."""
    return StoredGeometry(feats.xq, feats.yq, feats.angle_code, feats.scale_code,
                          feats.offsets, feats.xy_exponent)


def _save_blocks(path: Path, array: Any, block: int = 1 << 22) -> None:
    """`array` (in memory, memory-mapped or a `ConcatRows`) saved as `path` a block of
    rows at a time."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=array.dtype,
                                    shape=tuple(array.shape))
    for begin in range(0, len(array), block):
        out[begin:begin + block] = read_rows(array, begin, begin + block)
    out.flush()
    del out


_WORKER_METHOD: dict[str, VerificationMethod] = {}
"""The verifier a worker process built for the database folder it last attached."""


def _verify_in_worker(item: tuple[tuple[type, Any, str], tuple]) -> tuple[np.ndarray, np.ndarray]:
    """`verify_shortlist` of one query in a worker process: (class, config, database folder)
    and the query's arguments."""
    (cls, config, folder), task = item
    method = _WORKER_METHOD.get(folder)
    if method is None:
        _WORKER_METHOD.clear()
        method = cls(config, RunContext.in_memory(workers=1))
        method._attach_database(Path(folder))
        _WORKER_METHOD[folder] = method
    return method.verify_shortlist(*task)
