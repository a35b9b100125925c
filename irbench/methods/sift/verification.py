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

`match_hamming_threshold` (off by default: 64 >= `signature_bits`) keeps only the pairs
whose Hamming-embedding signatures (`hamming.HammingEmbedding`) are within that many
bits, before the cap: not in the verification papers, but it removes most false pairs
when the vocabulary is small (a few hundred words on a small collection give thousands
of pairs per image, nearly all false).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from irbench.core.config import param
from irbench.core.search import topk_from_scores
from irbench.datasets.base import Image, Query
from irbench.errors import ConfigError
from irbench.methods.base import QUERY_STAGE
from irbench.methods.sift.hamming import (
    HammingEmbeddingMethod,
    HammingIndex,
    HammingOptions,
    ScanSettings,
)
from irbench.methods.sift.invfile import TfIdfIndex, ranges
from irbench.methods.sift.keypoints import SiftOptions
from irbench.methods.sift.vocabulary import VocabularyOptions

__all__ = [
    "VerificationOptions",
    "VerificationConfig",
    "Geometry",
    "tentative_matches",
    "word_multiplicity",
    "rerank",
    "VerificationMethod",
]


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


def rerank(first_scores: np.ndarray, verified: np.ndarray, shortlist: np.ndarray, k: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """Final (ranks int64[k], scores float32[k]) of one query from its first-stage scores
    float[N], the shortlisted image indices and their verified match counts (ordering
    and scores as in the module doc)."""
    n = len(first_scores)
    best = float(first_scores.max()) if n else 0.0
    s = np.asarray(first_scores, np.float64) / best if best > 0 else np.zeros(n)
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
        self._db_geometry: Geometry | None = None
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

    # -- the contract -----------------------------------------------------------------

    def index(self, database: Sequence[Image]) -> None:
        words, offsets = self.prepare_database(database, keep_features=True)
        cfg = self.config
        self._db_signatures = None
        if cfg.first_stage == "he-wgc" or self._filters_by_hamming:
            sig, ang, sca = self.embedded("database", database, words)
            if self._filters_by_hamming:
                self._db_signatures = sig
        if cfg.first_stage == "he-wgc":
            self._first = HammingIndex.build(words, offsets, self._vocabulary.size,
                                             sig, ang, sca)
        else:
            self._first = TfIdfIndex.build(words, offsets, self._vocabulary.size)
        feats = self.features("database", database)
        self.forget_features()
        self.load_index(self._first, _geometry(feats), words, offsets)
        self._info["postings"] = int(self._first.invfile.n_postings)

    def load_index(self, first: TfIdfIndex | HammingIndex, geometry: Geometry,
                   words: np.ndarray, offsets: np.ndarray) -> None:
        """Install a first-stage index and the database's keypoint geometry, words and
        per-image `offsets` (what `index` builds; benchmarks pass synthetic ones)."""
        self._first = first
        self._db_geometry = geometry
        self._db_offsets = np.asarray(offsets, np.int64)
        image = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))
        self._db_order = np.lexsort((np.asarray(words, np.int64), image))
        self._db_sorted_words = np.asarray(words, np.int64)[self._db_order]

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
        ranks = np.zeros((nq, k), np.int64)
        top = np.zeros((nq, k), np.float32)
        totals = np.zeros(3, np.int64)
        with self.context.progress.task(f"{self.name}: verify top {depth}", total=nq) as advance:
            for qi in range(nq):
                a, b = int(offsets[qi]), int(offsets[qi + 1])
                ranks[qi], top[qi], stats = self.rerank_query(
                    words[a:b], q_geometry.take(np.arange(a, b)), first[qi], k,
                    None if q_signatures is None else q_signatures[a:b])
                totals += stats
                advance(1)
        self._info.update({"verified_pairs": int(totals[0]),
                           "tentative_matches": int(totals[1]),
                           "kept_matches": int(totals[2]), "shortlist_used": depth})
        return ranks, top

    def rerank_query(self, words: np.ndarray, geometry: Geometry, first_scores: np.ndarray,
                     k: int, signatures: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One query: verify its first-stage shortlist and re-rank (`signatures`: the
        query's HE signatures, needed when matches are filtered by Hamming distance).
        Returns (ranks int64[k], scores float32[k], [pairs verified, tentative matches,
        matches kept])."""
        hamming = None
        if self._filters_by_hamming:
            if signatures is None or self._db_signatures is None:
                raise RuntimeError(f"{self.name}: match_hamming_threshold needs signatures")
            hamming = (signatures, self._db_signatures, self.config.match_hamming_threshold)
        n = len(first_scores)
        shortlist = topk_from_scores(first_scores[None], min(self.config.shortlist, n))[0][0]
        counts = np.zeros(len(shortlist), np.int64)
        multiplicity = word_multiplicity(words)
        matches = 0
        for j, d in enumerate(shortlist):
            q_idx, d_idx = self._matches(words, multiplicity, int(d), hamming)
            matches += len(q_idx)
            if len(q_idx):
                mask = self.inliers(geometry.take(q_idx), self._db_geometry.take(d_idx))
                counts[j] = int(np.count_nonzero(mask))
        ranks, scores = rerank(first_scores, counts, shortlist, k)
        return ranks, scores, np.array([len(shortlist), matches, int(counts.sum())])

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

    def index_bytes(self) -> int | None:
        if self._first is None or self._db_geometry is None:
            return None
        geometry = sum(a.nbytes for a in (self._db_geometry.x, self._db_geometry.y,
                                          self._db_geometry.angle, self._db_geometry.scale))
        return int(self._first.nbytes + geometry + self._db_sorted_words.nbytes
                   + self._db_order.nbytes)


def _geometry(feats: Any) -> Geometry:
    """The keypoint geometry of `Features`, kept as float32 (16 bytes per feature)."""
    return Geometry(*(np.asarray(getattr(feats, f), np.float32)
                      for f in ("x", "y", "angle", "scale")))
