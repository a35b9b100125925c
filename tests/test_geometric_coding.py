"""Geometric Coding verification: synthetic true / false matches, rotation invariance, edge
cases, and the incremental removal against a naive recompute-each-iteration reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from irbench.errors import ConfigError
from irbench.methods.sift.geometric_coding import (
    GeometricCodingOptions,
    geo_maps,
    geometric_coding_counts,
    geometric_coding_inliers,
)

WIDTH, HEIGHT = 640, 480
TOLERANT = GeometricCodingOptions(max_inconsistency_fraction=0.05)


def _rotate_ccw(xy: np.ndarray, phi: float) -> np.ndarray:
    """Rotate pixel positions (x right, y down) by phi counter-clockwise *as seen*:
    (x, y) -> (x cos phi + y sin phi, -x sin phi + y cos phi); (1, 0) goes up-right."""
    c, s = math.cos(phi), math.sin(phi)
    return xy @ np.array([[c, s], [-s, c]]).T


def _scene(seed: int, rotation_deg: float | None, *, n_true: int = 60, n_false: int = 40,
           position_noise: float = 1.0, angle_noise: float = 0.0, angle_sign: float = -1.0):
    """Query keypoints in a 640x480 frame; the database keypoints of the first n_true matches
    are one similarity transform of them (scale s in 0.7..1.5, rotation rotation_deg or a
    random one of at most 10 degrees, translation), the rest are random.

    A counter-clockwise image rotation by phi turns an OpenCV angle (clockwise in the y-down
    frame, direction (cos a, sin a) in pixels) into a - phi: `angle_sign` = -1. The sign is
    a parameter only so that a test can show the wrong one is caught."""
    rng = np.random.default_rng(seed)
    m = n_true + n_false
    q_xy = rng.uniform([0.0, 0.0], [WIDTH, HEIGHT], (m, 2))
    q_angle = rng.uniform(0.0, 2 * math.pi, m)
    q_scale = rng.uniform(4.0, 40.0, m)
    s = rng.uniform(0.7, 1.5)
    deg = rng.uniform(-10.0, 10.0) if rotation_deg is None else rotation_deg
    phi = math.radians(deg)
    shift = rng.uniform(-100.0, 100.0, 2)
    d_xy = s * _rotate_ccw(q_xy, phi) + shift
    d_xy += rng.uniform(-position_noise, position_noise, d_xy.shape)
    noise = rng.normal(0.0, angle_noise, m) if angle_noise else 0.0
    d_angle = np.mod(q_angle + angle_sign * phi + noise, 2 * math.pi)
    d_scale = q_scale * s
    false = slice(n_true, None)
    d_xy[false] = rng.uniform([0.0, 0.0], [WIDTH, HEIGHT], (n_false, 2))
    d_angle[false] = rng.uniform(0.0, 2 * math.pi, n_false)
    d_scale[false] = rng.uniform(4.0, 40.0, n_false)
    truth = np.arange(m) < n_true
    return (q_xy, q_angle, q_scale, d_xy, d_angle, d_scale), truth


def _rates(keep: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(fraction of true matches kept, fraction of false matches dropped)."""
    return float(keep[truth].mean()), float(1.0 - keep[~truth].mean())


def test_angle_convention_of_the_synthetic_rotation():
    phi = math.radians(137.0)
    a = np.array([0.3, 2.0, 5.5])
    directions = np.stack([np.cos(a), np.sin(a)], axis=1)
    rotated = _rotate_ccw(directions, phi)
    assert np.allclose(rotated, np.stack([np.cos(a - phi), np.sin(a - phi)], axis=1))
    # counter-clockwise as seen in a y-down image: right (1, 0) goes up (y < 0)
    assert _rotate_ccw(np.array([[1.0, 0.0]]), math.radians(30.0))[0, 1] < 0


@pytest.mark.parametrize("rotation_deg", [None, 90.0, 137.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_keeps_true_matches_and_drops_false_ones(rotation_deg, seed):
    args, truth = _scene(seed, rotation_deg)
    keep = geometric_coding_inliers(*args, TOLERANT)
    kept_true, dropped_false = _rates(keep, truth)
    assert kept_true >= 0.9
    assert dropped_false >= 0.9


@pytest.mark.parametrize("rotation_deg", [None, 90.0, 137.0])
def test_strict_default_leaves_a_fully_consistent_set(rotation_deg):
    args, truth = _scene(3, rotation_deg)
    keep = geometric_coding_inliers(*args)
    kept_true, dropped_false = _rates(keep, truth)
    assert dropped_false >= 0.9
    assert kept_true >= 0.75  # near-boundary true pairs flip under the 1 px noise
    q_maps = geo_maps(args[0][keep], args[1][keep], args[2][keep])
    d_maps = geo_maps(args[3][keep], args[4][keep], args[5][keep])
    assert np.array_equal(q_maps, d_maps)


@pytest.mark.parametrize("rotation_deg", [90.0, 137.0, 250.0])
def test_exact_similarity_keeps_every_true_match(rotation_deg):
    args, truth = _scene(4, rotation_deg, position_noise=0.0)
    keep = geometric_coding_inliers(*args)
    assert keep[truth].all()
    assert not keep[~truth].any()


def test_orientation_noise_is_tolerated_with_a_fraction():
    args, truth = _scene(5, 137.0, angle_noise=0.15)
    strict = _rates(geometric_coding_inliers(*args), truth)
    tolerant = _rates(geometric_coding_inliers(*args, TOLERANT), truth)
    assert tolerant[0] >= 0.85 and tolerant[1] >= 0.9
    assert strict[0] < tolerant[0]


def test_wrong_angle_convention_is_caught():
    args, truth = _scene(6, 137.0, angle_sign=+1.0)  # angles turned the wrong way
    keep = geometric_coding_inliers(*args, TOLERANT)
    assert keep[truth].mean() < 0.5


def test_geo_maps_are_invariant_to_a_similarity():
    rng = np.random.default_rng(7)
    m = 40
    xy = rng.uniform(0.0, 500.0, (m, 2))
    angle = rng.uniform(0.0, 2 * math.pi, m)
    scale = rng.uniform(4.0, 40.0, m)
    phi, s = math.radians(137.0), 1.3
    options = GeometricCodingOptions(square_scale_factor=3.0, square_count=3, fan_rotations=3)
    maps = geo_maps(xy, angle, scale, options)
    moved = geo_maps(s * _rotate_ccw(xy, phi) + 17.0, np.mod(angle - phi, 2 * math.pi),
                     s * scale, options)
    assert maps.shape == (3 + 2 * 3, m, m) and maps.dtype == bool
    assert np.array_equal(maps, moved)
    assert maps[0].any() and not maps[0].all()  # the square bit is informative here


def test_geo_maps_on_a_hand_made_case():
    # feature 0 at the origin pointing down (+y in pixels), sigma = 5, alpha = 2: half side 10
    xy = np.array([[0.0, 0.0], [3.0, 8.0], [-12.0, 1.0]])
    angle = np.array([math.pi / 2, 0.0, 0.0])
    scale = np.array([10.0, 10.0, 10.0])  # OpenCV size 10: sigma 5
    maps = geo_maps(xy, angle, scale)
    # in feature 0's frame: u = dy, v = -dx; feature 1 at (u, v) = (8, -3), feature 2 (1, 12)
    assert maps[:, 0, 1].tolist() == [True, False, True]  # inside, u >= 0, v < 0
    assert maps[:, 0, 2].tolist() == [False, False, False]  # 12 >= 10: outside
    # feature 1 (pointing right, same size) sees feature 0 at (u, v) = (-3, -8): inside
    assert maps[:, 1, 0].tolist() == [True, True, True]


def _naive_inliers(args, options: GeometricCodingOptions) -> np.ndarray:
    """Reference: per-pair bits from the formulas, sums recomputed from scratch each round."""
    q_xy, q_angle, q_scale, d_xy, d_angle, d_scale = args
    n, r = options.square_count, options.fan_rotations
    alpha = options.square_scale_factor

    def bits(xy, angle, scale, i, j):
        dx, dy = xy[j, 0] - xy[i, 0], xy[j, 1] - xy[i, 1]
        u = dx * math.cos(angle[i]) + dy * math.sin(angle[i])
        v = -dx * math.sin(angle[i]) + dy * math.cos(angle[i])
        out = [max(abs(u), abs(v)) < k * alpha * scale[i] / 2 for k in range(1, n + 1)]
        for k in range(r):
            t = k * math.pi / (2 * r)
            out += [u * math.cos(t) + v * math.sin(t) < 0, v * math.cos(t) - u * math.sin(t) < 0]
        return out

    m = len(q_angle)
    e = np.zeros((m, m), dtype=int)
    for i in range(m):
        for j in range(m):
            if i != j:
                bq = bits(q_xy, q_angle, q_scale, i, j)
                bd = bits(d_xy, d_angle, d_scale, i, j)
                e[i, j] = sum(a != b for a, b in zip(bq, bd, strict=True))
    w = e + e.T
    keep = np.ones(m, dtype=bool)
    while keep.sum() > 1:
        idx = np.flatnonzero(keep)
        totals = w[np.ix_(idx, idx)].sum(axis=1)
        limit = options.max_inconsistency_fraction * 2 * (n + 2 * r) * (len(idx) - 1)
        if totals.max() <= limit:
            break
        keep[idx[int(np.argmax(totals))]] = False  # first maximum: the lowest index
    return keep


@pytest.mark.parametrize("options", [
    GeometricCodingOptions(),
    GeometricCodingOptions(max_inconsistency_fraction=0.1),
    GeometricCodingOptions(square_scale_factor=4.0, square_count=2, fan_rotations=2),
])
def test_incremental_removal_matches_the_naive_reference(options):
    args, _ = _scene(8, 137.0, n_true=12, n_false=18, angle_noise=0.1)
    keep = geometric_coding_inliers(*args, options)
    assert 0 < keep.sum() < len(keep)  # the case exercises removal and keeps something
    assert np.array_equal(keep, _naive_inliers(args, options))


def test_ties_remove_the_lowest_index():
    # two matches whose database positions are swapped relative to the query: the pair is
    # inconsistent both ways, T(0) = T(1), and match 0 goes
    args = (np.array([[0.0, 0.0], [100.0, 0.0]]), np.zeros(2), np.full(2, 10.0),
            np.array([[100.0, 0.0], [0.0, 0.0]]), np.zeros(2), np.full(2, 10.0))
    assert geometric_coding_inliers(*args).tolist() == [False, True]


@pytest.mark.parametrize("m", [0, 1, 2])
def test_small_inputs(m):
    xy = np.arange(2 * m, dtype=float).reshape(m, 2) * 10.0
    keep = geometric_coding_inliers(xy, np.zeros(m), np.full(m, 8.0),
                                    xy + 5.0, np.zeros(m), np.full(m, 8.0))
    assert keep.dtype == bool and keep.shape == (m,)
    assert keep.all()  # a translated pair (or less) is consistent


def test_output_shape_and_dtype():
    args, _ = _scene(9, None)
    keep = geometric_coding_inliers(*args)
    assert keep.dtype == bool and keep.shape == (100,)


@pytest.mark.parametrize("bad, message", [
    ({"query_xy": np.zeros((3, 3))}, "query_xy must have shape"),
    ({"db_angle": np.zeros((3, 1))}, "db_angle must have shape"),
    ({"db_scale": np.ones(4)}, "one row per match"),
    ({"query_angle": np.array([0.0, np.nan, 0.0])}, "query_angle has non-finite"),
    ({"query_scale": np.array([1.0, 0.0, 1.0])}, "query_scale must be > 0"),
])
def test_bad_inputs_raise_value_error(bad, message):
    args = {"query_xy": np.zeros((3, 2)), "query_angle": np.zeros(3),
            "query_scale": np.ones(3), "db_xy": np.zeros((3, 2)), "db_angle": np.zeros(3),
            "db_scale": np.ones(3)}
    args.update(bad)
    with pytest.raises(ValueError, match=message):
        geometric_coding_inliers(**args)


@pytest.mark.parametrize("options", [
    GeometricCodingOptions(square_scale_factor=0.0),
    GeometricCodingOptions(square_count=0),
    GeometricCodingOptions(fan_rotations=1.5),
    GeometricCodingOptions(max_inconsistency_fraction=-0.1),
])
def test_bad_options_raise_config_error(options):
    args, _ = _scene(10, None, n_true=3, n_false=0)
    with pytest.raises(ConfigError):
        geometric_coding_inliers(*args, options)


def test_a_thousand_matches_are_handled():
    args, _ = _scene(11, 137.0, n_true=600, n_false=400)
    keep = geometric_coding_inliers(*args)  # latency: benchmarks/bench_sift_baselines.py
    assert keep.shape == (1000,)
    assert keep[600:].mean() <= 0.1 and keep[:600].mean() >= 0.4  # strict rule: ~50% kept


@pytest.mark.parametrize("options", [
    GeometricCodingOptions(),
    GeometricCodingOptions(max_inconsistency_fraction=0.05),
    GeometricCodingOptions(square_scale_factor=4.0, square_count=2, fan_rotations=2),
])
def test_counts_of_many_images_equal_the_one_image_verification(options):
    rng = np.random.default_rng(5)
    parts = []
    for j, m in enumerate([0, 1, 2, 3, *rng.integers(2, 60, 30).tolist()]):
        n_true = int(rng.integers(0, m + 1))
        args, _ = _scene(j, None if j % 2 else 90.0 * j, n_true=n_true, n_false=m - n_true,
                         angle_noise=0.05 * (j % 3))
        if j % 5 == 4:  # coincident keypoints and equal coordinates
            args = tuple(np.round(a / 50) * 50 if a.ndim == 2 else a for a in args)
        parts.append(args)
    joined = [np.concatenate([p[i] for p in parts]) for i in range(6)]
    offsets = np.concatenate([[0], np.cumsum([len(p[1]) for p in parts])])
    counts = geometric_coding_counts(*joined, offsets, options)
    reference = [int(geometric_coding_inliers(*(a[lo:hi] for a in joined), options).sum())
                 for lo, hi in zip(offsets[:-1], offsets[1:], strict=True)]
    np.testing.assert_array_equal(counts, reference)
    assert len(set(counts.tolist())) > 5
