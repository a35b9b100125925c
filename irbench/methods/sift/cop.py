"""COP verification: keep the largest group of SIFT matches consistent in orientation and position.

Paper: L. Chu, S. Jiang, S. Wang, Y. Zhang, Q. Huang, "Robust spatial consistency graph model
for partial duplicate image retrieval", IEEE Trans. Multimedia 15(8), Dec. 2013 (from p. 1982).

What could be confirmed: only the paper's abstract (no full text, section or equation
numbers, parameter values or public code were found). It describes two parts, both
implemented here:

1. The COP (Combined-Orientation-Position) consistency, "a rotation invariant measurement of
   the relative spatial consistency among the candidate matches"; "it uses a coarse-to-fine
   family of evenly sectored polar coordinate systems to softly quantize and combine the
   orientations and positions of the SIFT features" (`cop_consistency`).
2. The consistency graph model, which "rejects the spatially inconsistent noisy features by
   effectively detecting the group of candidate feature matches with the largest average COP
   consistency" (`consistent_group`).

Conventions: x right, y down (pixels); `angle` in radians, OpenCV's `KeyPoint.angle`
(degrees, clockwise in the y-down frame) × π/180, so a keypoint points along
(cos angle, sin angle) in pixel coordinates, the same frame as `atan2(dy, dx)`.

COP consistency, as implemented. Match i pairs query feature (p_i, θ_i) with database
feature (p'_i, θ'_i). Around p_i lies a polar coordinate system whose polar axis is θ_i,
split into K equal sectors of 2π/K (sector k spans [2πk/K, 2π(k+1)/K) clockwise from the
axis). Another match j is seen from i by

    position     φ_ij = atan2(y_j - y_i, x_j - x_i) - θ_i   (mod 2π)
    orientation  ψ_ij = θ_j - θ_i                          (mod 2π)

and φ'_ij, ψ'_ij likewise in the database image. Both are unchanged by any rotation, scaling
and translation of either image, hence rotation invariant. For each K of the family
(`sector_counts`, K_1 < K_2 < ..., coarse to fine) orientation and position agree when

    hard (default): ⌊Kψ/2π⌋ = ⌊Kψ'/2π⌋   and   ⌊Kφ/2π⌋ = ⌊Kφ'/2π⌋   (same sectors), or
    soft:           o_K = max(0, 1 - K·|ψ - ψ'|/2π),  p_K likewise with φ (circular |·|),
                    the probability that hard sectors agree when the sector boundaries are
                    turned by a uniformly random offset (no boundary effects),

and are combined as o_K·p_K (orientation *and* position). Seen from i,
M_ij = (1/L) Σ_K o_K p_K over the L systems; with nested counts (each K divides the next,
as (4, 8, 16)) hard agreement at a fine level implies it at every coarser one, so L·M_ij is
how many levels, coarse to fine, the pair survives - the soft, coarse-to-fine quantization.
The COP consistency of the pair uses the systems centred on both features:

    c_ij = (M_ij + M_ji) / 2   in [0, 1],   c_ii = 0.

A pair whose two features coincide in either image (no direction) has c_ij = 0.

Consistency graph, as implemented. Vertices are the matches, edge (i, j) weighs c_ij. The
average consistency of a match v in a group S is a_v(S) = Σ_{u∈S∖v} c_uv / (|S| - 1) and the
group's average consistency is the mean of a_v(S) over S. Maximizing that average alone is
degenerate (any two fully consistent matches reach 1), and the paper's optimisation could
not be confirmed, so the group is found by greedy peeling: starting from all matches, remove
the match with the smallest a_v (the single removal that raises the group's average the
most; ties to the lower index), until every remaining match has a_v ≥ β
(`min_group_consistency`). That is the largest group met on the way whose members are each,
on average, consistent with the rest. Degrees are updated incrementally (one O(m) numpy step
per removal, O(m²) in all). A group smaller than `min_group_size` is rejected (no match kept),
so one or zero matches are never verified.

Choices the paper leaves open (or that could not be confirmed), with the choice made:

- sector counts of the family: (4, 8, 16), i.e. sectors of 90°, 45° and 22.5°;
- hard sectors (the literal "evenly sectored" systems) by default; soft as an option;
- combination of orientation and position: product per level, mean over levels;
- symmetrization: mean of the systems centred on i and on j;
- the group selection: greedy peeling with threshold β = 0.5 (above). On purely random
  matches it still finds a small chance group (measured: about 3 of 100, 5 of 300 and
  10 of 1000 kept); raise `min_group_size` or β to cut that floor;
- scales are accepted (uniform verifier signature) but not used: COP combines orientations
  and positions only;
- the image score is not computed here: `verification.py` scores an image by the number of
  matches kept.

`CopMethod` (registered as `cop`) scores each image in a first-stage shortlist
(`irbench.methods.sift.verification`) by the number of matches `cop_inliers` keeps,
computed for the whole shortlist at once by `cop_counts`: images of similar m padded to one
size and stacked, `_level_sums` on [B, M, M] arrays (the same float32 operations), the
peeling in lockstep over the images. Hard sectors give integer weights (exact sums in any
order); with soft ones each image's degrees are summed by the same call as in
`consistent_group`; so the counts equal those of `cop_inliers` (tested; timed in
`benchmarks/bench_sift_baselines.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from irbench.core.config import param
from irbench.errors import ConfigError
from irbench.methods.base import QUERY_STAGE
from irbench.methods.sift.verification import (
    Geometry,
    VerificationConfig,
    VerificationMethod,
    padded_groups,
)

__all__ = ["CopOptions", "check_cop_options", "cop_consistency", "consistent_group",
           "cop_inliers", "cop_counts"]

_TWO_PI = 2.0 * math.pi


@dataclass(frozen=True)
class CopOptions:
    """Config fields of COP (combined orientation-position) consistency verification."""

    sector_counts: tuple[int, ...] = param(
        (4, 8, 16), "K: sectors of each evenly sectored polar system, coarse to fine (the "
                    "paper's 'coarse-to-fine family'; its values unconfirmed)", stage=QUERY_STAGE)
    sector_quantization: str = param(
        "hard", "'hard': orientation/position agree when in the same sector; 'soft': "
                "probability of that under a random turn of the sectors (no boundary effects)",
        choices=("hard", "soft"), stage=QUERY_STAGE)
    min_group_consistency: float = param(
        0.5, "beta: stop removing matches once each kept match's mean COP consistency c_ij "
             "with the others is at least this (0..1)", stage=QUERY_STAGE)
    min_group_size: int = param(
        2, "keep no match when the consistent group has fewer matches than this (>= 2)", stage=QUERY_STAGE)


def check_cop_options(options: CopOptions) -> None:
    """Reject out-of-range COP settings with a message naming the field."""
    counts = tuple(options.sector_counts)
    if not counts or any(int(k) != k or k < 1 for k in counts):
        raise ConfigError(f"sector_counts must be a non-empty tuple of integers >= 1, "
                          f"got {options.sector_counts!r}")
    if options.sector_quantization not in ("hard", "soft"):
        raise ConfigError(f"sector_quantization must be 'hard' or 'soft', "
                          f"got {options.sector_quantization!r}")
    if not 0.0 <= options.min_group_consistency <= 1.0:
        raise ConfigError(f"min_group_consistency must be in [0, 1], "
                          f"got {options.min_group_consistency}")
    if int(options.min_group_size) != options.min_group_size or options.min_group_size < 2:
        raise ConfigError(f"min_group_size must be an integer >= 2, got {options.min_group_size}")


def _as_inputs(query_xy: np.ndarray, query_angle: np.ndarray, query_scale: np.ndarray,
               db_xy: np.ndarray, db_angle: np.ndarray, db_scale: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validated float32 (query_xy, query_angle, db_xy, db_angle); ValueError on bad shapes."""
    arrays = {"query_xy": query_xy, "query_angle": query_angle, "query_scale": query_scale,
              "db_xy": db_xy, "db_angle": db_angle, "db_scale": db_scale}
    arrays = {name: np.asarray(a) for name, a in arrays.items()}
    for name, a in arrays.items():
        want_2d = name.endswith("_xy")
        if want_2d and (a.ndim != 2 or a.shape[1] != 2):
            raise ValueError(f"COP: {name} must have shape (m, 2), got {a.shape}")
        if not want_2d and a.ndim != 1:
            raise ValueError(f"COP: {name} must have shape (m,), got {a.shape}")
    rows = {name: a.shape[0] for name, a in arrays.items()}
    if len(set(rows.values())) > 1:
        listed = ", ".join(f"{name} {n}" for name, n in rows.items())
        raise ValueError(f"COP: every input needs one row per tentative match; rows: {listed}")
    for name, a in arrays.items():
        if not np.all(np.isfinite(a)):
            raise ValueError(f"COP: {name} has non-finite values")
    return tuple(np.asarray(arrays[k], np.float32)
                 for k in ("query_xy", "query_angle", "db_xy", "db_angle"))


def _turns(xy: np.ndarray, angle: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(φ, ψ, has_direction), each m×m: position and orientation of j in i's polar system in
    turns (fractions of 2π, not reduced mod 1), and whether p_j ≠ p_i. Leading axes of
    `xy` [..., m, 2] and `angle` [..., m] (a stack of images) carry through."""
    dx = xy[..., None, :, 0] - xy[..., :, None, 0]
    dy = xy[..., None, :, 1] - xy[..., :, None, 1]
    has_direction = (dx != 0) | (dy != 0)
    turn = angle * np.float32(1.0 / _TWO_PI)
    phi = np.arctan2(dy, dx)
    phi *= np.float32(1.0 / _TWO_PI)
    phi -= turn[..., :, None]
    psi = turn[..., None, :] - turn[..., :, None]
    return phi, psi, has_direction


def _reduce(t: np.ndarray) -> np.ndarray:
    """t mod 1, in place (floor is several times faster than np.mod)."""
    t -= np.floor(t)
    return t


def _same_sector(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """bool: turn fractions a, b in [0, 1] fall in the same of K sectors (a fraction rounded
    up to exactly 1.0 counts as the last sector)."""
    return np.minimum(np.floor(a * k), k - 1) == np.minimum(np.floor(b * k), k - 1)


def _level_sums(query_xy: np.ndarray, query_angle: np.ndarray, db_xy: np.ndarray,
                db_angle: np.ndarray, options: CopOptions) -> np.ndarray:
    """W = L·(M + Mᵀ), float32 m×m with zero diagonal: c_ij = W_ij / (2L). In hard mode
    W holds integers 0..2L, so the group selection sums it exactly. Leading axes (a stack
    of images, [..., m]) carry through."""
    phi_q, psi_q, dir_q = _turns(query_xy, query_angle)
    phi_d, psi_d, dir_d = _turns(db_xy, db_angle)
    m = query_angle.shape[-1]
    total = np.zeros(query_angle.shape + (m,), np.float32)
    if options.sector_quantization == "soft":
        # circular distances in turns, in [0, 0.5]; agreement max(0, 1 - K·distance)
        dist = []
        for a, b in ((phi_q, phi_d), (psi_q, psi_d)):
            a -= b
            a -= np.rint(a)
            dist.append(np.abs(a, out=a))
        for k in options.sector_counts:
            p = np.maximum(1.0 - np.float32(k) * dist[0], 0.0)
            p *= np.maximum(1.0 - np.float32(k) * dist[1], 0.0)
            total += p
    else:
        for t in (phi_q, psi_q, phi_d, psi_d):
            _reduce(t)
        for k in options.sector_counts:
            total += _same_sector(phi_q, phi_d, int(k)) & _same_sector(psi_q, psi_d, int(k))
    total *= dir_q & dir_d
    total += np.swapaxes(total, -1, -2)
    diagonal = np.arange(m)
    total[..., diagonal, diagonal] = 0.0
    return total


def cop_consistency(query_xy: np.ndarray, query_angle: np.ndarray, query_scale: np.ndarray,
                    db_xy: np.ndarray, db_angle: np.ndarray, db_scale: np.ndarray,
                    options: CopOptions = CopOptions()) -> np.ndarray:
    """COP consistency c_ij of every pair of the m tentative matches, float32[m, m] in
    [0, 1], symmetric, zero diagonal (definition in the module doc)."""
    check_cop_options(options)
    q_xy, q_angle, d_xy, d_angle = _as_inputs(query_xy, query_angle, query_scale,
                                              db_xy, db_angle, db_scale)
    total = _level_sums(q_xy, q_angle, d_xy, d_angle, options)
    total /= np.float32(2 * len(options.sector_counts))
    return total


def consistent_group(weights: np.ndarray, min_mean_weight: float, min_group_size: int = 2
                     ) -> np.ndarray:
    """Greedy peeling of a symmetric, non-negative m×m weight matrix (zero diagonal): remove
    the vertex of least weighted degree within the remaining group (ties to the lower index)
    until each remaining vertex's mean weight to the others is >= `min_mean_weight`.
    Returns bool[m], the group, or all False when it has fewer than `min_group_size`
    vertices. Degrees are updated incrementally: O(m) per removal."""
    w = np.asarray(weights)
    m = w.shape[0]
    if w.ndim != 2 or w.shape[1] != m:
        raise ValueError(f"weights must be a square matrix, got shape {w.shape}")
    alive = np.ones(m, bool)
    if m < min_group_size or m < 2:
        alive[:] = False
        return alive
    degree = w.sum(axis=1, dtype=np.float64)
    # relative slack so float rounding cannot flip a comparison at exactly the threshold
    slack = 1e-9 * max(1.0, float(min_mean_weight))
    n = m
    while n >= 2:
        v = int(np.argmin(degree))
        if degree[v] >= (min_mean_weight - slack) * (n - 1):
            break
        degree -= w[v]
        degree[v] = np.inf
        alive[v] = False
        n -= 1
    if n < min_group_size:
        alive[:] = False
    return alive


def cop_inliers(query_xy: np.ndarray, query_angle: np.ndarray, query_scale: np.ndarray,
                db_xy: np.ndarray, db_angle: np.ndarray, db_scale: np.ndarray,
                options: CopOptions = CopOptions()) -> np.ndarray:
    """The tentative matches COP keeps, bool[m]: the group found by `consistent_group` on
    the COP consistency graph. Row i of each array is match i: xy float[m, 2] (pixels, y
    down), angle float[m] (radians, OpenCV clockwise), scale float[m] (OpenCV size; unused).
    Raises ValueError on mismatched shapes or non-finite values."""
    check_cop_options(options)
    q_xy, q_angle, d_xy, d_angle = _as_inputs(query_xy, query_angle, query_scale,
                                              db_xy, db_angle, db_scale)
    m = len(q_angle)
    if m < options.min_group_size:
        return np.zeros(m, bool)
    total = _level_sums(q_xy, q_angle, d_xy, d_angle, options)
    unit = 2 * len(options.sector_counts)  # c_ij = total_ij / unit
    return consistent_group(total, options.min_group_consistency * unit,
                            int(options.min_group_size))


def cop_counts(query_xy: np.ndarray, query_angle: np.ndarray, query_scale: np.ndarray,
               db_xy: np.ndarray, db_angle: np.ndarray, db_scale: np.ndarray,
               offsets: np.ndarray, options: CopOptions = CopOptions()) -> np.ndarray:
    """int64[n]: for each of n images (matches offsets[j]:offsets[j + 1] of the rows of the
    inputs), how many matches `cop_inliers` keeps, computed for many images at once (equal
    to it, tested).

    Images of similar m are padded to one size M and stacked: `_level_sums` runs on
    [B, M, M] arrays (the same element-wise float32 operations; `arctan2` on contiguous
    arrays as there), and `consistent_group` in lockstep over the images (each step: the
    argmin of every row, the removed vertex's row subtracted), an image leaving once its
    stopping test holds. Hard sectors give integer weights, whose sums are exact in any
    order; with soft sectors each image's first degrees are summed by the same call on
    the same (m, m) array as `consistent_group`, so the float64 sums are those bits too."""
    check_cop_options(options)
    q_xy, q_angle, d_xy, d_angle = _as_inputs(query_xy, query_angle, query_scale,
                                              db_xy, db_angle, db_scale)
    offsets = np.asarray(offsets, np.int64)
    sizes = np.diff(offsets)
    min_size = int(options.min_group_size)
    out = np.zeros(len(sizes), np.int64)  # m < min_group_size: no match kept
    big = np.flatnonzero(sizes >= min_size)
    unit = 2 * len(options.sector_counts)
    min_mean_weight = options.min_group_consistency * unit
    slack = 1e-9 * max(1.0, float(min_mean_weight))
    for images, rows, valid in padded_groups(offsets, big, lambda m: m * m, 1 << 15):
        m, width = sizes[images], rows.shape[1]
        total = _level_sums(q_xy[rows], q_angle[rows], d_xy[rows], d_angle[rows], options)
        total *= valid[:, :, None] & valid[:, None, :]
        if len(images) == 1:  # nothing to run in lockstep with: the one-image code
            out[images] = int(consistent_group(total[0], min_mean_weight, min_size).sum())
            continue
        if options.sector_quantization == "hard":
            degree = total.sum(axis=2, dtype=np.float64)
        else:
            degree = np.zeros((len(images), width))
            for b, size in enumerate(m.tolist()):
                w = np.ascontiguousarray(total[b, :size, :size])
                degree[b, :size] = w.sum(axis=1, dtype=np.float64)
        degree[~valid] = np.inf
        out[images] = _lockstep_peeling(total, degree, m.astype(np.int64),
                                        min_mean_weight - slack, min_size)
    return out


def _lockstep_peeling(weights: np.ndarray, degree: np.ndarray, n: np.ndarray, threshold: float,
                      min_size: int) -> np.ndarray:
    """`consistent_group` on every image b at once (weights[b], first degrees degree[b],
    inf past its n[b] vertices); returns the size of each group (0 below `min_size`)."""
    rows = np.arange(len(n))
    out = np.zeros(len(n), np.int64)
    here = rows.copy()
    while len(rows):
        v = np.argmin(degree, axis=1)
        go = (n >= 2) & ~(degree[here, v] >= threshold * (n - 1))
        if not go.all():
            out[rows[~go]] = n[~go]
            rows, degree, n, v = rows[go], degree[go], n[go], v[go]
            here = np.arange(len(rows))
        degree -= weights[rows, v]
        degree[here, v] = np.inf
        n -= 1
    out[out < min_size] = 0
    return out


# -- the method -----------------------------------------------------------------------


@dataclass(frozen=True)
class CopConfig(CopOptions, VerificationConfig):
    """COP: the SIFT, vocabulary, Hamming and shortlist fields, then the COP fields."""


class CopMethod(VerificationMethod):
    """Re-ranks a BoW (or HE+WGC) shortlist by the size of the COP-consistent match group."""

    name = "cop"
    description = ("COP (Chu et al. 2013): combined orientation-position consistency graph "
                   "over tentative SIFT matches, re-ranking a BoW shortlist")
    Config = CopConfig
    Options = CopOptions

    def __init__(self, config: CopConfig | None = None, context=None) -> None:
        super().__init__(config, context)
        check_cop_options(self.options)

    def inliers(self, query: Geometry, database: Geometry) -> np.ndarray:
        return cop_inliers(query.xy, query.angle, query.scale, database.xy, database.angle,
                           database.scale, self.options)

    def inlier_counts(self, query: Geometry, database: Geometry, offsets: np.ndarray
                      ) -> np.ndarray:
        return cop_counts(query.xy, query.angle, query.scale, database.xy, database.angle,
                          database.scale, offsets, self.options)
