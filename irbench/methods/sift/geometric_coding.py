"""Geometric Coding verification: drop the tentative SIFT matches whose relative positions,
seen from each feature's own oriented and scaled frame, differ between query and database.

Paper: W. Zhou, H. Li, Y. Lu, Q. Tian, "SIFT match verification by geometric coding for
large-scale partial-duplicate web image search", ACM TOMM 9(1), 2013; conference version
"Large scale image search with geometric coding", ACM Multimedia 2011. Implemented: geometric
square coding (the square map, S-map, and its generalization to concentric squares),
geometric fan coding (the fan maps, H-map and V-map, and their generalization to more fans),
and the verification: XOR of the query and database geo-maps, inconsistency sums per match,
iterative removal of the most inconsistent match. What could be confirmed while writing this
module: the abstract ("geometric square coding and geometric fan coding, which describe the
spatial relationships of SIFT features into three geo-maps for global verification to remove
geometrically inconsistent SIFT matches") and the patent's claims (US 9,412,020: square
coding divides the image plane "into regular squares relative to a feature"; the image is
rotated "to align the one of the feature vectors with a predetermined orientation"). The
full text was not reachable, so section/equation numbers are not cited and the formulas
below are the method as described in those sources and the task brief.

Conventions: x right, y down (pixels); `angle` in radians, OpenCV's `KeyPoint.angle`
(degrees, clockwise in the y-down frame) × π/180, so a keypoint points along
d = (cos θ, sin θ) in pixel coordinates; `scale` is OpenCV's `KeyPoint.size`, the diameter
of the described region, so the SIFT scale of the paper (Lowe's σ) is σ = size / 2.
Rotating an image by φ counter-clockwise (as seen) turns every d by -φ (θ ↦ θ - φ mod 2π).

Geo-maps of one image (the query, then the database image, built the same way). Match i has
feature (p_i, θ_i, σ_i) there. The other features are expressed in i's frame, the plane
turned so that i's orientation is the x axis:

    u_ij = (p_j - p_i) · (cos θ_i, sin θ_i),   v_ij = (p_j - p_i) · (-sin θ_i, cos θ_i).

A rotation of the image turns p_j - p_i and d_i together, so (u_ij, v_ij) are unchanged:
rotation invariance comes from each map being written in the reference feature's frame.

- Square coding: a square centred on p_i, aligned with d_i, of half side s_i = α·σ_i;
  S(i, j) = 1 when j lies inside, max(|u_ij|, |v_ij|) < s_i. Scaling the image scales s_i
  with it, so the map is scale invariant too. Generalized (n concentric squares, half sides
  k·s_i, k = 1..n): one bit per square, S_k(i, j) = [max(|u_ij|, |v_ij|) < k·s_i], so the
  number of differing bits is how many square outlines separate the two positions.
- Fan coding: the plane around p_i is cut by the lines through p_i along d_i and its normal
  into four fans (quadrants); H(i, j) = [u_ij < 0], V(i, j) = [v_ij < 0]. Generalized
  (r turns of these axes by k·π/(2r), k = 0..r-1): 2r lines, 4r fans of π/(2r) each, coded
  by 2r bits H_k, V_k; the number of differing bits between two fans is how many fan
  boundaries separate them.

Verification. Per ordered pair, the inconsistency is the number of geo-map bits that
differ, E(i, j) = Σ_maps map_query(i, j) XOR map_db(i, j) (n square bits + 2r fan bits;
the maps are not symmetric, since i's frame and size are not j's). The inconsistency of
match i with the set R of remaining matches is T(i) = Σ_{j∈R} E(i, j) + E(j, i): how the
others look from i plus how i looks from the others. While the largest T exceeds
τ · 2(n + 2r) · (|R| - 1) (τ = `max_inconsistency_fraction`; paper: τ = 0, i.e. until
every remaining pair agrees in every map), the match with the largest T is removed and every
T is updated by subtracting the removed match's column of E + Eᵀ: one O(m) step per
removal, O(m²) in all with the maps.

Measured on synthetic matches (60 true under a similarity with ≤ 1 px position noise, 40
random false; tests/test_geometric_coding.py): τ = 0 drops every false match but also ~10%
of the true ones (a true pair lying near a fan or square boundary flips under the noise and
costs one of its two matches; with 600 true + 400 false matches in the same frame, half of
the true ones), and ~65% of them with 8.6° (0.15 rad) orientation noise;
τ = 0.05 keeps all true matches without orientation noise and ~95% with it, still dropping
≥ 95% of the false ones. τ > 0 is not in the paper; it is offered for noisy orientations.

Choices the paper leaves open (or that could not be confirmed), with the choice made:

- scale used: σ = OpenCV size / 2 (the SIFT σ), half side s_i = α·σ_i;
- square size factor α = 2 and one square (n = 1), i.e. a square of side 4σ_i around
  each feature (α is a constant of the paper whose value could not be confirmed);
- fans: r = 1, four quadrants coded by 2 bits (the H-map and V-map; with the S-map these
  are the paper's "three geo-maps");
- boundaries: inside a square strictly (< s_i); a feature on a fan line (u = 0 or v = 0)
  counts on the non-negative side; coincident features (p_j = p_i) are inside every square
  and in the first fan, in query and database alike;
- all maps are summed into one count per pair (square and fan bits weigh the same), and
  both E(i, j) and E(j, i) count for match i (measured: it keeps far more true matches
  than row sums alone when most matches are false);
- stopping: τ = 0 (full consistency) by default;
- ties in removal (equal largest T): the lowest match index is removed first;
- m = 0, 1: every match is kept (nothing to compare); m = 2 is verified like any other;
- the image score is not computed here: `verification.py` scores an image by the number of
  matches kept.

`GeometricCodingMethod` (registered as `geometric-coding`) scores each image in a
first-stage shortlist (`irbench.methods.sift.verification`) by the number of matches
`geometric_coding_inliers` keeps, computed for the whole shortlist at once by
`geometric_coding_counts`: images of similar m padded to one size and stacked, the geo-maps
built by the same float64 operations on [B, M, M] arrays, the removal in lockstep over the
images. T are integer sums and each image removes in the same order, so the counts equal
those of `geometric_coding_inliers` (tested; timed in `benchmarks/bench_sift_baselines.py`).
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

__all__ = [
    "GeometricCodingOptions",
    "check_geometric_coding_options",
    "geo_maps",
    "pair_inconsistency",
    "remove_inconsistent",
    "geometric_coding_inliers",
    "geometric_coding_counts",
]


@dataclass(frozen=True)
class GeometricCodingOptions:
    """Config fields of Geometric Coding verification."""

    square_scale_factor: float = param(
        2.0, "alpha: half side of the square around a feature = alpha x SIFT sigma "
             "(sigma = OpenCV size / 2); paper value unconfirmed", stage=QUERY_STAGE)
    square_count: int = param(
        1, "n: concentric squares per feature, half sides k x alpha x sigma, k = 1..n "
           "(1 = the paper's S-map)", stage=QUERY_STAGE)
    fan_rotations: int = param(
        1, "r: fan axes turned by k x 90/r degrees, k = 0..r-1, giving 4r fans coded by 2r "
           "bits (1 = the paper's H-map and V-map, four quadrants)", stage=QUERY_STAGE)
    max_inconsistency_fraction: float = param(
        0.0, "stop removing once no kept match disagrees with the other kept ones in more "
             "than this fraction of their geo-map bits (paper: 0, every map consistent)", stage=QUERY_STAGE)


def check_geometric_coding_options(options: GeometricCodingOptions) -> None:
    """Reject out-of-range Geometric Coding settings with a message naming the field."""
    alpha = options.square_scale_factor
    if not (isinstance(alpha, int | float) and math.isfinite(alpha) and alpha > 0):
        raise ConfigError(f"square_scale_factor must be a finite number > 0, got {alpha!r}")
    for name in ("square_count", "fan_rotations"):
        value = getattr(options, name)
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    tol = options.max_inconsistency_fraction
    if not (isinstance(tol, int | float) and 0.0 <= tol <= 1.0):
        raise ConfigError(f"max_inconsistency_fraction must be in [0, 1], got {tol!r}")


def _check_inputs(query_xy: np.ndarray, query_angle: np.ndarray, query_scale: np.ndarray,
                  db_xy: np.ndarray, db_angle: np.ndarray, db_scale: np.ndarray
                  ) -> tuple[np.ndarray, ...]:
    """The six inputs as float64 arrays; ValueError naming the input on a bad shape or value."""
    arrays = {"query_xy": query_xy, "query_angle": query_angle, "query_scale": query_scale,
              "db_xy": db_xy, "db_angle": db_angle, "db_scale": db_scale}
    out = {}
    for name, a in arrays.items():
        a = np.asarray(a, dtype=np.float64)
        if name.endswith("_xy"):
            if a.ndim != 2 or a.shape[1] != 2:
                raise ValueError(f"geometric coding: {name} must have shape (m, 2), "
                                 f"got {a.shape}")
        elif a.ndim != 1:
            raise ValueError(f"geometric coding: {name} must have shape (m,), got {a.shape}")
        out[name] = a
    rows = {name: a.shape[0] for name, a in out.items()}
    if len(set(rows.values())) > 1:
        listed = ", ".join(f"{name} {n}" for name, n in rows.items())
        raise ValueError(f"geometric coding: every input needs one row per match; got {listed}")
    for name, a in out.items():
        if not np.isfinite(a).all():
            raise ValueError(f"geometric coding: {name} has non-finite values")
        if name.endswith("_scale") and (a <= 0).any():
            raise ValueError(f"geometric coding: {name} must be > 0 (OpenCV KeyPoint.size)")
    return tuple(out.values())


def geo_maps(xy: np.ndarray, angle: np.ndarray, scale: np.ndarray,
             options: GeometricCodingOptions = GeometricCodingOptions()) -> np.ndarray:
    """Geo-maps of one image: bool[n_bits, m, m], bit b of pair (i, j) seen from feature i.

    Bits, in order: the n square bits S_k(i, j) (k = 1..n), then H_k(i, j), V_k(i, j) for
    each of the r fan rotations (k = 0..r-1); n_bits = n + 2r. `xy` float[m, 2], `angle`
    (radians, OpenCV convention) and `scale` (OpenCV size) float[m]."""
    xy = np.asarray(xy, np.float64)
    angle = np.asarray(angle, np.float64)
    scale = np.asarray(scale, np.float64)
    m = len(angle)
    n_sq, r = int(options.square_count), int(options.fan_rotations)
    maps = np.empty((n_sq + 2 * r, m, m), dtype=bool)
    dx = xy[None, :, 0] - xy[:, None, 0]  # dx[i, j] = x_j - x_i
    dy = xy[None, :, 1] - xy[:, None, 1]
    cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
    u = dx * cos + dy * sin  # along d_i
    v = dy * cos - dx * sin  # along the normal of d_i
    cheb = np.maximum(np.abs(u), np.abs(v))
    half_side = (options.square_scale_factor * 0.5) * scale[:, None]  # alpha * sigma_i
    for k in range(n_sq):
        np.less(cheb, (k + 1) * half_side, out=maps[k])
    for k in range(r):
        if k == 0:
            uk, vk = u, v
        else:
            c, s = math.cos(k * math.pi / (2 * r)), math.sin(k * math.pi / (2 * r))
            uk, vk = u * c + v * s, v * c - u * s
        np.less(uk, 0.0, out=maps[n_sq + 2 * k])
        np.less(vk, 0.0, out=maps[n_sq + 2 * k + 1])
    return maps


def pair_inconsistency(query_maps: np.ndarray, db_maps: np.ndarray) -> np.ndarray:
    """E int32[m, m]: per ordered pair (i, j), how many geo-map bits differ between the query
    and the database image (the XOR of the maps, counted over the bits)."""
    n_bits, m, _ = query_maps.shape
    out = np.zeros((m, m), dtype=np.int32)
    for b in range(n_bits):
        out += np.not_equal(query_maps[b], db_maps[b])
    return out


def remove_inconsistent(pair_cost: np.ndarray, max_per_partner: float = 0.0) -> np.ndarray:
    """Iterative removal on W (int[m, m], symmetric, zero diagonal): while the largest
    T(i) = Σ_{j kept, j ≠ i} W(i, j) over the kept matches exceeds
    `max_per_partner` × (kept - 1), remove that match (the lowest index on ties).
    Returns bool[m], the kept matches. O(m²) in all."""
    m = pair_cost.shape[0]
    keep = np.ones(m, dtype=bool)
    if m == 0:
        return keep
    totals = pair_cost.sum(axis=1, dtype=np.int64)
    for n_kept in range(m, 0, -1):
        worst = int(np.argmax(totals))
        if totals[worst] <= max_per_partner * (n_kept - 1):
            break
        keep[worst] = False
        totals -= pair_cost[worst]  # the removed match's row = its column (W symmetric)
        totals[worst] = -1  # never chosen again (kept totals are >= 0)
    return keep


def geometric_coding_inliers(query_xy: np.ndarray, query_angle: np.ndarray,
                             query_scale: np.ndarray, db_xy: np.ndarray, db_angle: np.ndarray,
                             db_scale: np.ndarray,
                             options: GeometricCodingOptions = GeometricCodingOptions()
                             ) -> np.ndarray:
    """The tentative matches Geometric Coding keeps: bool[m].

    Row i of each input is match i: `*_xy` float[m, 2] (pixels, x right, y down), `*_angle`
    float[m] (radians, OpenCV's clockwise `KeyPoint.angle` × π/180), `*_scale` float[m]
    (OpenCV's `KeyPoint.size`). ValueError on mismatched shapes or bad values, ConfigError on
    bad options."""
    check_geometric_coding_options(options)
    qxy, qa, qs, dxy, da, ds = _check_inputs(query_xy, query_angle, query_scale,
                                             db_xy, db_angle, db_scale)
    m = len(qa)
    if m < 2:
        return np.ones(m, dtype=bool)
    cost = pair_inconsistency(geo_maps(qxy, qa, qs, options), geo_maps(dxy, da, ds, options))
    cost = cost + cost.T  # E(i, j) + E(j, i)
    n_bits = int(options.square_count) + 2 * int(options.fan_rotations)
    return remove_inconsistent(cost, 2 * n_bits * float(options.max_inconsistency_fraction))


def geometric_coding_counts(query_xy: np.ndarray, query_angle: np.ndarray,
                            query_scale: np.ndarray, db_xy: np.ndarray, db_angle: np.ndarray,
                            db_scale: np.ndarray, offsets: np.ndarray,
                            options: GeometricCodingOptions = GeometricCodingOptions()
                            ) -> np.ndarray:
    """int64[n]: for each of n images (matches offsets[j]:offsets[j + 1] of the rows of the
    inputs), how many matches `geometric_coding_inliers` keeps, computed for many images at
    once (equal to it, tested).

    Images of similar m are padded to one size M and stacked: the geo-maps and E + Eᵀ are
    [B, M, M] arrays (the same element-wise operations as `geo_maps`; sines and cosines
    are taken once over all matches), and `remove_inconsistent` runs in lockstep over the
    images (each step: the argmax of every row, the removed match's row subtracted), an
    image leaving once its stopping test holds. T are integer sums and each image follows
    the same removal order and test, so the counts are exact."""
    check_geometric_coding_options(options)
    qxy, qa, qs, dxy, da, ds = _check_inputs(query_xy, query_angle, query_scale,
                                             db_xy, db_angle, db_scale)
    offsets = np.asarray(offsets, np.int64)
    sizes = np.diff(offsets)
    out = sizes.copy()  # m < 2: every match is kept
    big = np.flatnonzero(sizes >= 2)
    n_bits = int(options.square_count) + 2 * int(options.fan_rotations)
    limit = 2 * n_bits * float(options.max_inconsistency_fraction)
    sides = [(qxy, np.cos(qa), np.sin(qa), qs), (dxy, np.cos(da), np.sin(da), ds)]
    for images, rows, valid in padded_groups(offsets, big, lambda m: m * m, 1 << 15):
        width = rows.shape[1]
        cost = np.zeros((len(images), width, width), np.int32)
        maps = [_padded_maps(xy[rows], cos[rows], sin[rows], scale[rows], options)
                for xy, cos, sin, scale in sides]
        for q_bit, d_bit in zip(*maps, strict=True):
            cost += np.not_equal(q_bit, d_bit)
        cost += cost.transpose(0, 2, 1)
        cost *= valid[:, :, None] & valid[:, None, :]
        out[images] = _lockstep_removal(cost, valid, limit)
    return out


def _padded_maps(xy: np.ndarray, cos: np.ndarray, sin: np.ndarray, scale: np.ndarray,
                 options: GeometricCodingOptions) -> list[np.ndarray]:
    """`geo_maps` of B images at once (inputs [B, M]; bits as a list of bool[B, M, M]),
    with the same float64 operations in the same order, in place where possible."""
    n_sq, r = int(options.square_count), int(options.fan_rotations)
    dx = xy[:, None, :, 0] - xy[:, :, None, 0]  # dx[b, i, j] = x_j - x_i
    dy = xy[:, None, :, 1] - xy[:, :, None, 1]
    cos, sin = cos[:, :, None], sin[:, :, None]
    u = dx * cos
    u += dy * sin
    v = dy * cos
    dx *= sin
    v -= dx
    del dx, dy
    cheb = np.abs(u)
    np.maximum(cheb, np.abs(v), out=cheb)
    half_side = (options.square_scale_factor * 0.5) * scale[:, :, None]
    bits = [np.less(cheb, (k + 1) * half_side) for k in range(n_sq)]
    del cheb
    for k in range(r):
        if k == 0:
            uk, vk = u, v
        else:
            c, s = math.cos(k * math.pi / (2 * r)), math.sin(k * math.pi / (2 * r))
            uk, vk = u * c + v * s, v * c - u * s
        bits += [np.less(uk, 0.0), np.less(vk, 0.0)]
    return bits


def _lockstep_removal(cost: np.ndarray, valid: np.ndarray, limit: float) -> np.ndarray:
    """`remove_inconsistent(cost[b], limit)` for every image b at once; returns the number
    of matches each keeps (one image: `remove_inconsistent` itself)."""
    if len(cost) == 1:
        m = int(valid[0].sum())
        return np.array([remove_inconsistent(cost[0, :m, :m], limit).sum()], np.int64)
    totals = cost.sum(axis=2, dtype=np.int64)
    totals[~valid] = -1
    n_kept = valid.sum(axis=1).astype(np.int64)
    rows = np.arange(len(cost))
    out = n_kept.copy()
    here = rows.copy()
    while len(rows):
        worst = np.argmax(totals, axis=1)
        go = totals[here, worst] > limit * (n_kept - 1)
        if not go.all():
            out[rows[~go]] = n_kept[~go]
            rows, totals, n_kept, worst = rows[go], totals[go], n_kept[go], worst[go]
            here = np.arange(len(rows))
        totals -= cost[rows, worst]
        totals[here, worst] = -1
        n_kept -= 1
    return out


# -- the method -----------------------------------------------------------------------


@dataclass(frozen=True)
class GeometricCodingConfig(GeometricCodingOptions, VerificationConfig):
    """Geometric coding: SIFT, vocabulary, Hamming and shortlist fields, then its own."""


class GeometricCodingMethod(VerificationMethod):
    """Re-ranks a BoW (or HE+WGC) shortlist by the matches that survive geometric coding."""

    name = "geometric-coding"
    description = ("Geometric Coding (Zhou et al. 2013): square and fan maps in each "
                   "feature's own frame, re-ranking a BoW shortlist")
    Config = GeometricCodingConfig
    Options = GeometricCodingOptions

    def __init__(self, config: GeometricCodingConfig | None = None, context=None) -> None:
        super().__init__(config, context)
        check_geometric_coding_options(self.options)

    def inliers(self, query: Geometry, database: Geometry) -> np.ndarray:
        return geometric_coding_inliers(query.xy, query.angle, query.scale, database.xy,
                                        database.angle, database.scale, self.options)

    def inlier_counts(self, query: Geometry, database: Geometry, offsets: np.ndarray
                      ) -> np.ndarray:
        return geometric_coding_counts(query.xy, query.angle, query.scale, database.xy,
                                       database.angle, database.scale, offsets, self.options)
