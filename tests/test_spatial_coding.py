"""Spatial Coding verification (Zhou et al., ACM MM 2010): synthetic scenes, edge cases, and
the incremental removal against a recompute-everything reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from irbench.core.config import build_config
from irbench.errors import ConfigError
from irbench.methods.sift.spatial_coding import (
    SpatialCodingOptions,
    spatial_coding_counts,
    spatial_coding_inliers,
    spatial_coding_single,
)

NO_ROTATION = SpatialCodingOptions(query_rotations=1)


def _rotation(degrees: float) -> np.ndarray:
    a = math.radians(degrees)
    return np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])


def _scene(seed: int, rotation: float = 0.0, n_true: int = 60, n_false: int = 40,
           noise: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Query points in a 640x480 frame; the first `n_true` database points are a similarity
    (scale 0.7..1.5, `rotation` degrees, translation) of them plus uniform noise of at most
    `noise` px per coordinate, the other `n_false` are random (false matches)."""
    rng = np.random.default_rng(seed)
    q = rng.uniform((0, 0), (640, 480), (n_true + n_false, 2))
    scale = rng.uniform(0.7, 1.5)
    shift = rng.uniform(-100, 100, 2)
    d = scale * q @ _rotation(rotation).T + shift + rng.uniform(-noise, noise, q.shape)
    d[n_true:] = rng.uniform((-300, -300), (900, 700), (n_false, 2))
    return q, d


def _rates(keep: np.ndarray, n_true: int = 60) -> tuple[float, float]:
    """(fraction of true matches kept, fraction of false matches dropped)."""
    return float(keep[:n_true].mean()), float(1.0 - keep[n_true:].mean())


# -- synthetic scenes -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_similarity_keeps_true_matches_and_drops_false_ones(seed):
    q, d = _scene(seed)
    keep = spatial_coding_inliers(q, d, NO_ROTATION)
    kept, dropped = _rates(keep)
    assert kept >= 0.9
    assert dropped >= 0.9


@pytest.mark.parametrize("seed", range(3))
def test_spatial_coding_is_not_rotation_invariant(seed):
    # Any pair whose direction is near an axis of one of the frames changes side under a
    # rotation; the removal only stops once no inconsistency is left, so a 10-degree turn
    # loses many true matches without query rotations.
    q, d = _scene(seed, rotation=10.0, noise=0.0)
    kept, _ = _rates(spatial_coding_inliers(q, d, NO_ROTATION))
    assert kept < 0.75


@pytest.mark.parametrize(("seed", "rotation"), [(0, 90.0), (1, 90.0), (2, -90.0), (3, 180.0)])
def test_quarter_turns_need_the_query_rotations(seed, rotation):
    q, d = _scene(seed, rotation=rotation)
    kept, _ = _rates(spatial_coding_inliers(q, d, NO_ROTATION))
    assert kept < 0.5
    kept, dropped = _rates(spatial_coding_inliers(q, d))  # 20 x 18 degrees hits the turn
    assert kept >= 0.9
    assert dropped >= 0.9


def _best_single(q: np.ndarray, d: np.ndarray, options: SpatialCodingOptions
                 ) -> tuple[list[int], list[np.ndarray]]:
    """Kept counts and masks of `spatial_coding_single` on the query turned by each step."""
    centre = q.mean(axis=0)
    counts, masks = [], []
    for j in range(options.query_rotations):
        turned = (q - centre) @ _rotation(j * options.query_rotation_step).T + centre
        masks.append(spatial_coding_single(turned, d, options.frames))
        counts.append(int(masks[-1].sum()))
    return counts, masks


def test_rotations_are_the_best_of_single_verifications_of_the_turned_query():
    q, d = _scene(7, rotation=40.0, noise=0.0)  # between two 18-degree steps: partial keeps
    counts, masks = _best_single(q, d, SpatialCodingOptions())
    best = int(np.argmax(counts))  # ties: the smallest rotation
    assert counts[best] > counts[0]
    np.testing.assert_array_equal(spatial_coding_inliers(q, d), masks[best])


def test_equal_counts_go_to_the_smallest_rotation():
    options = SpatialCodingOptions()
    rng = np.random.default_rng(0)
    ties = 0
    for _ in range(20):
        q, d = rng.uniform(0, 100, (8, 2)), rng.uniform(0, 100, (8, 2))  # few, random
        counts, masks = _best_single(q, d, options)
        best = int(np.argmax(counts))
        later = [j for j in range(best + 1, len(counts))
                 if counts[j] == counts[best] and (masks[j] != masks[best]).any()]
        ties += bool(later)
        np.testing.assert_array_equal(spatial_coding_inliers(q, d, options), masks[best])
    assert ties >= 5  # the rule was exercised: other rotations kept as many, differently


# -- edge cases -------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [lambda q, d: spatial_coding_inliers(q, d),
                                lambda q, d: spatial_coding_single(q, d, 2)])
def test_edge_cases(fn):
    empty = fn(np.zeros((0, 2)), np.zeros((0, 2)))
    assert empty.dtype == bool and empty.shape == (0,)
    one = fn(np.array([[3.0, 4.0]]), np.array([[100.0, -7.0]]))
    assert one.dtype == bool and one.tolist() == [True]
    pts = np.random.default_rng(0).uniform(0, 500, (50, 2))
    same = fn(pts, pts.copy())
    assert same.dtype == bool and same.shape == (50,) and same.all()
    grid = np.array([[x, y] for x in range(4) for y in range(4)], float)  # many equal coords
    assert fn(grid, 3 * grid + 1).all()
    two = fn(np.array([[0.0, 0.0], [10.0, 10.0]]), np.array([[5.0, 5.0], [9.0, 9.0]]))
    assert two.tolist() == [True, True]


def test_two_contradicting_matches_keep_one_ties_to_the_lower_index_removed():
    q = np.array([[0.0, 0.0], [10.0, 10.0]])
    d = np.array([[10.0, 10.0], [0.0, 0.0]])  # both x and y orders swapped: equal sums
    assert spatial_coding_inliers(q, d, NO_ROTATION).tolist() == [False, True]
    assert spatial_coding_single(q, d, 1).tolist() == [False, True]


def test_hand_checked_outlier_is_removed():
    q = np.array([[0.0, 0.0], [10.0, 0.0], [20.0, 0.0]])
    d = np.array([[0.0, 5.0], [10.0, 5.0], [-50.0, 5.0]])  # match 2 jumps to the far left
    for frames in (1, 2, 3):
        assert spatial_coding_single(q, d, frames).tolist() == [True, True, False]


@pytest.mark.parametrize("frames", [1, 2])
def test_equal_coordinates_follow_the_papers_map_literally(frames):
    # Xmap(i, j) = 0 if x_i < x_j else 1: equal x in the query gives 1 both ways; in the
    # database x_0 < x_1 gives Xmap(0, 1) = 0: only entry (0, 1) disagrees, so match 0
    # carries the inconsistency and is removed.
    q = np.array([[0.0, 0.0], [0.0, 10.0]])
    assert spatial_coding_single(q, np.array([[0.0, 0.0], [5.0, 10.0]]), frames).tolist() \
        == [False, True]
    assert spatial_coding_single(q, np.array([[5.0, 0.0], [0.0, 10.0]]), frames).tolist() \
        == [True, False]


# -- against a naive reference ----------------------------------------------------------------


def _naive(q: np.ndarray, d: np.ndarray, frames: int) -> np.ndarray:
    """The paper's verification recomputed from scratch after every removal: maps GX, GY in
    r frames, V = XOR, row sums S; rounds of an x-step then a y-step removing the largest
    positive sum (ties: larger sum on the other axis, then lower index)."""
    alive = list(range(len(q)))

    def sums(idx: list[int]) -> np.ndarray:
        s = np.zeros((2, len(idx)), np.int64)
        for k in range(frames):
            rot = _rotation(90.0 * k / frames)
            qk, dk = q[idx] @ rot.T, d[idx] @ rot.T
            for axis in (0, 1):
                gq = qk[:, axis][:, None] >= qk[:, axis][None, :]
                gd = dk[:, axis][:, None] >= dk[:, axis][None, :]
                s[axis] += (gq ^ gd).sum(axis=1)
        return s

    removed = True
    while removed:
        removed = False
        for axis in (0, 1):
            s = sums(alive)
            pos = max(range(len(alive)), key=lambda p: (s[axis][p], s[1 - axis][p], -p))
            if s[axis][pos] > 0:
                del alive[pos]
                removed = True
    keep = np.zeros(len(q), bool)
    keep[alive] = True
    return keep


@pytest.mark.parametrize("seed", range(4))
def test_incremental_removal_matches_naive_recompute_with_ties(seed):
    rng = np.random.default_rng(seed)
    q = rng.integers(0, 8, (30, 2)).astype(float)  # a small grid: many equal coordinates
    d = 2.0 * q + 3.0
    d[18:] = rng.integers(0, 16, (12, 2))
    keep = spatial_coding_single(q, d, 1)
    np.testing.assert_array_equal(keep, _naive(q, d, 1))
    assert 0 < keep.sum() < 30


@pytest.mark.parametrize(("seed", "frames"), [(0, 2), (1, 2), (2, 3), (3, 4)])
def test_incremental_removal_matches_naive_recompute_in_rotated_frames(seed, frames):
    q, d = _scene(seed, rotation=3.0, n_true=18, n_false=12, noise=1.0)
    keep = spatial_coding_single(q, d, frames)
    np.testing.assert_array_equal(keep, _naive(q, d, frames))
    assert 0 < keep.sum() < 30


# -- many images at once against one at a time ---------------------------------------------


def _segments(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Matches of 30 images, concatenated: scenes with true and false matches (turned by
    0 to 180 degrees), random ones and grids full of equal coordinates; m from 0 to 40."""
    rng = np.random.default_rng(seed)
    qs, ds = [], []
    for j in range(30):
        kind, m = j % 3, [0, 1, 2, 3][j] if j < 4 else int(rng.integers(2, 41))
        if kind == 0:
            n_true = int(rng.integers(0, m + 1))
            q, d = _scene(seed * 100 + j, rotation=float(rng.uniform(0, 180)), n_true=n_true,
                          n_false=m - n_true, noise=1.0)
        elif kind == 1:
            q, d = rng.uniform(0, 640, (m, 2)), rng.uniform(0, 640, (m, 2))
        else:
            q = rng.integers(0, 6, (m, 2)).astype(float)
            d = 2.0 * q + 3.0
            d[m // 2:] = rng.integers(0, 12, (m - m // 2, 2))
        qs.append(q)
        ds.append(d)
    offsets = np.concatenate([[0], np.cumsum([len(q) for q in qs])])
    return np.concatenate(qs), np.concatenate(ds), offsets


@pytest.mark.parametrize(("seed", "options"), [
    (0, SpatialCodingOptions()),
    (1, SpatialCodingOptions()),
    (2, SpatialCodingOptions(frames=4, query_rotations=5, query_rotation_step=33.0)),
    (3, NO_ROTATION),
])
def test_counts_of_many_images_equal_the_one_image_verification(seed, options):
    q, d, offsets = _segments(seed)
    counts = spatial_coding_counts(q, d, offsets, options)
    reference = [int(spatial_coding_inliers(q[a:b], d[a:b], options).sum())
                 for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    np.testing.assert_array_equal(counts, reference)
    assert counts.dtype == np.int64 and len(set(counts.tolist())) > 5


# -- inputs, options, speed -------------------------------------------------------------------


def test_input_validation():
    with pytest.raises(ValueError, match="one row per tentative match"):
        spatial_coding_inliers(np.zeros((5, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"db_xy must have shape \(m, 2\)"):
        spatial_coding_single(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"query_xy must have shape \(m, 2\)"):
        spatial_coding_inliers(np.zeros(10), np.zeros(10))
    with pytest.raises(ValueError, match="non-finite"):
        spatial_coding_inliers(np.array([[0.0, np.nan]]), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="frames"):
        spatial_coding_single(np.zeros((3, 2)), np.zeros((3, 2)), 0)


def test_options():
    assert SpatialCodingOptions() == SpatialCodingOptions(frames=2, query_rotations=20,
                                                          query_rotation_step=18.0)
    assert build_config(SpatialCodingOptions, {"frames": "3"}).frames == 3
    for bad in ({"frames": "0"}, {"query_rotations": "0"}, {"query_rotation_step": "inf"}):
        with pytest.raises(ConfigError):
            build_config(SpatialCodingOptions, bad)


def test_a_thousand_false_matches_with_twenty_rotations_are_mostly_dropped():
    rng = np.random.default_rng(0)
    q, d = rng.uniform(0, 640, (1000, 2)), rng.uniform(0, 640, (1000, 2))  # all false
    keep = spatial_coding_inliers(q, d)  # latency: benchmarks/bench_sift_baselines.py
    assert keep.dtype == bool and keep.shape == (1000,) and keep.sum() < 50


@pytest.mark.parametrize("fields,name", [({"signature_bits": 16, "hamming_threshold": 20},
                                          "hamming_threshold"),
                                         ({"gaussian_sigma": 0.0}, "gaussian_sigma"),
                                         ({"frames": 0}, "frames")])
def test_every_part_of_the_config_checks_its_fields(fields, name):
    """The spatial-coding config inherits the Hamming fields: their checks run too."""
    from irbench.errors import ConfigError
    from irbench.methods.sift.spatial_coding import SpatialCodingConfig

    with pytest.raises(ConfigError, match=name):
        SpatialCodingConfig(**fields)
