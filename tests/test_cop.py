"""COP verification (`irbench.methods.sift.cop`): synthetic similarity-transformed matches with
outliers, rotation invariance, OpenCV's angle convention, the group selection against a
naive reference, and input validation."""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
import pytest

from irbench.core.config import describe_fields
from irbench.errors import ConfigError
from irbench.methods.sift.cop import (
    CopOptions,
    consistent_group,
    cop_consistency,
    cop_counts,
    cop_inliers,
)

WIDTH, HEIGHT = 640, 480


def rotation_y_down(theta: float) -> np.ndarray:
    """2×2 matrix turning pixel coordinates (x right, y down) by `theta` radians
    counter-clockwise as seen on screen. On screen, counter-clockwise is the negative
    angular direction of the y-down frame: the matrix is the standard R(-theta), and (1, 0)
    (right) goes to (0, -1) (up) for theta = 90°."""
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, s], [-s, c]])


def synthetic_matches(seed: int, rotation_deg: float | None, n_true: int = 60,
                      n_false: int = 40, angle_sign: float = -1.0):
    """(query_xy, query_angle, query_scale, db_xy, db_angle, db_scale, is_true).

    True matches: the database image is the query image scaled by s in 0.7..1.5, turned by
    theta counter-clockwise on screen (random within ±10° when `rotation_deg` is None) about
    the image centre and shifted; positions get ≤ 1 px noise. OpenCV's angles are clockwise
    in the y-down frame, i.e. the angular direction of atan2(dy, dx) on pixel coordinates;
    the on-screen counter-clockwise turn is -theta in that frame, so each keypoint's angle
    becomes angle - theta (mod 2π) (`angle_sign=-1`; +1 is the wrong convention), plus ≤ 1°
    detector noise; scales are multiplied by s. False matches: random database position,
    angle and scale."""
    rng = np.random.default_rng(seed)
    m = n_true + n_false
    q_xy = rng.uniform([0, 0], [WIDTH, HEIGHT], (m, 2))
    q_angle = rng.uniform(0, 2 * np.pi, m)
    q_scale = rng.uniform(4, 40, m)
    s = rng.uniform(0.7, 1.5)
    theta = math.radians(rng.uniform(-10, 10) if rotation_deg is None else rotation_deg)
    centre = np.array([WIDTH / 2, HEIGHT / 2])
    shift = rng.uniform(-80, 80, 2)
    d_xy = (q_xy - centre) @ rotation_y_down(theta).T * s + centre + shift
    radius, direction = rng.uniform(0, 1, m), rng.uniform(0, 2 * np.pi, m)
    d_xy += np.stack([radius * np.cos(direction), radius * np.sin(direction)], axis=1)
    d_angle = (q_angle + angle_sign * theta + np.radians(rng.uniform(-1, 1, m))) % (2 * np.pi)
    d_scale = q_scale * s
    lo, hi = d_xy[:n_true].min(axis=0), d_xy[:n_true].max(axis=0)
    d_xy[n_true:] = rng.uniform(lo, hi, (n_false, 2))
    d_angle[n_true:] = rng.uniform(0, 2 * np.pi, n_false)
    d_scale[n_true:] = rng.uniform(4, 40, n_false) * s
    is_true = np.arange(m) < n_true
    return q_xy, q_angle, q_scale, d_xy, d_angle, d_scale, is_true


def test_rotation_convention_of_helper():
    # on screen, counter-clockwise 90° takes "right" to "up" (negative y)
    np.testing.assert_allclose(rotation_y_down(math.pi / 2) @ [1.0, 0.0], [0.0, -1.0],
                               atol=1e-12)


# -- true matches kept, false ones dropped --------------------------------------------------


@pytest.mark.parametrize("quantization", ["hard", "soft"])
@pytest.mark.parametrize("rotation_deg", [None, 90.0, 137.0])
@pytest.mark.parametrize("seed", range(4))
def test_keeps_true_drops_false(seed, rotation_deg, quantization):
    *geometry, is_true = synthetic_matches(seed, rotation_deg)
    kept = cop_inliers(*geometry, options=CopOptions(sector_quantization=quantization))
    assert kept.dtype == bool and kept.shape == is_true.shape
    assert kept[is_true].mean() >= 0.9, f"kept {kept[is_true].mean():.2f} of the true matches"
    assert (~kept[~is_true]).mean() >= 0.9, f"dropped {(~kept[~is_true]).mean():.2f} of false"


def test_wrong_angle_convention_is_rejected():
    """Counter-clockwise angles (+theta) break position consistency at 137°: the test data's
    convention is what makes the true matches consistent."""
    *geometry, is_true = synthetic_matches(0, 137.0, angle_sign=+1.0)
    kept = cop_inliers(*geometry)
    assert kept[is_true].mean() < 0.5


def test_random_matches_are_mostly_rejected():
    rng = np.random.default_rng(5)
    m = 100
    args = (rng.uniform(0, 640, (m, 2)), rng.uniform(0, 2 * np.pi, m), rng.uniform(4, 40, m),
            rng.uniform(0, 640, (m, 2)), rng.uniform(0, 2 * np.pi, m), rng.uniform(4, 40, m))
    assert cop_inliers(*args).sum() <= 10


def test_opencv_sift_rotated_image():
    """Real SIFT keypoints of an image and of its copy turned 90° counter-clockwise on
    screen (np.rot90, lossless): OpenCV's angles change by -90°, as `synthetic_matches`
    assumes, and COP keeps the descriptor matches and drops added random pairings."""
    rng = np.random.default_rng(0)
    noise = rng.uniform(0, 255, (240, 320)).astype(np.float32)
    image = cv2.GaussianBlur(noise, (0, 0), 3.0)
    image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    turned = np.ascontiguousarray(np.rot90(image))
    sift = cv2.SIFT_create(nfeatures=300)
    kq, dq = sift.detectAndCompute(image, None)
    kd, dd = sift.detectAndCompute(turned, None)
    pairs = [(mt.queryIdx, mt.trainIdx)
             for mt in cv2.BFMatcher(cv2.NORM_L2, crossCheck=True).match(dq, dd)]
    assert len(pairs) >= 30
    n_false = 100
    pairs += list(zip(rng.integers(0, len(kq), n_false), rng.integers(0, len(kd), n_false),
                      strict=True))
    qi, di = np.array(pairs).T

    def geometry(kps, idx):
        xy = np.array([kps[i].pt for i in idx])
        angle = np.radians([kps[i].angle for i in idx]) % (2 * np.pi)
        return xy, angle, np.array([kps[i].size for i in idx])

    q_xy, q_angle, q_scale = geometry(kq, qi)
    d_xy, d_angle, d_scale = geometry(kd, di)
    # np.rot90 sends pixel (x, y) to (y, W - 1 - x): the ground truth of every pairing
    expected = np.stack([q_xy[:, 1], image.shape[1] - 1 - q_xy[:, 0]], axis=1)
    correct = np.linalg.norm(d_xy - expected, axis=1) < 2.0
    assert correct.sum() >= 30 and (~correct).sum() >= 90
    turn = np.angle(np.exp(1j * (d_angle[correct] - q_angle[correct] + np.pi / 2)))
    assert np.median(np.abs(turn)) < math.radians(5)
    kept = cop_inliers(q_xy, q_angle, q_scale, d_xy, d_angle, d_scale)
    assert kept[correct].mean() >= 0.9
    assert (~kept[~correct]).mean() >= 0.9


# -- the consistency matrix -----------------------------------------------------------------


@pytest.mark.parametrize("quantization", ["hard", "soft"])
def test_consistency_matrix_is_invariant_and_well_formed(quantization):
    """Exact similarity (no noise): c is symmetric, zero on the diagonal, in [0, 1], and
    the same whatever the rotation; identical images give c = 1 off the diagonal."""
    rng = np.random.default_rng(3)
    m = 50
    q_xy = rng.uniform(0, 500, (m, 2))
    q_angle = rng.uniform(0, 2 * np.pi, m)
    scale = rng.uniform(4, 40, m)
    options = CopOptions(sector_quantization=quantization)
    same = cop_consistency(q_xy, q_angle, scale, q_xy, q_angle, scale, options)
    off = ~np.eye(m, dtype=bool)
    assert np.all(same[off] == 1.0) and np.all(np.diag(same) == 0.0)
    for deg in (10.0, 90.0, 137.0, 250.0):
        theta = math.radians(deg)
        d_xy = q_xy @ rotation_y_down(theta).T * 1.3 + [40.0, -25.0]
        d_angle = (q_angle - theta) % (2 * np.pi)
        c = cop_consistency(q_xy, q_angle, scale, d_xy, d_angle, scale * 1.3, options)
        assert c.shape == (m, m) and c.dtype == np.float32
        np.testing.assert_array_equal(c, c.T)
        assert np.all(np.diag(c) == 0.0) and c.min() >= 0.0 and c.max() <= 1.0
        # float rounding may move a few angles across a sector boundary
        assert np.mean(np.isclose(c[off], 1.0, atol=1e-3)) >= 0.99


def reference_consistency(q_xy, q_angle, d_xy, d_angle, counts, quantization):
    """Per-pair Python loop in degrees, straight from the module doc's definition."""
    m = len(q_angle)

    def seen_from(xy, angle, i, j):
        phi = math.degrees(math.atan2(xy[j][1] - xy[i][1], xy[j][0] - xy[i][0]) - angle[i])
        return phi % 360.0, math.degrees(angle[j] - angle[i]) % 360.0

    def agree(a, b, k):
        if quantization == "hard":
            return float(int(a // (360.0 / k)) == int(b // (360.0 / k)))
        gap = abs(a - b) % 360.0
        return max(0.0, 1.0 - k * min(gap, 360.0 - gap) / 360.0)

    c = np.zeros((m, m))
    for i in range(m):
        for j in range(m):
            if i == j:
                continue
            total = 0.0
            for a, b in ((i, j), (j, i)):
                phi_q, psi_q = seen_from(q_xy, q_angle, a, b)
                phi_d, psi_d = seen_from(d_xy, d_angle, a, b)
                total += sum(agree(phi_q, phi_d, k) * agree(psi_q, psi_d, k) for k in counts)
            c[i, j] = total / (2 * len(counts))
    return c


@pytest.mark.parametrize("quantization", ["hard", "soft"])
def test_consistency_equals_per_pair_reference(quantization):
    """Random, mostly inconsistent geometry (all agreement levels occur)."""
    rng = np.random.default_rng(11)
    m = 14
    q_xy = rng.uniform(0, 300, (m, 2))
    q_angle = rng.uniform(0, 2 * np.pi, m)
    d_xy = q_xy + rng.normal(0, 25, (m, 2))
    d_angle = (q_angle + rng.normal(0, 0.4, m)) % (2 * np.pi)
    counts = (4, 8, 16)
    options = CopOptions(sector_counts=counts, sector_quantization=quantization)
    got = cop_consistency(q_xy, q_angle, np.ones(m), d_xy, d_angle, np.ones(m), options)
    want = reference_consistency(q_xy, q_angle, d_xy, d_angle, counts, quantization)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert len(np.unique(np.round(want, 4))) >= 4  # not a trivial all-0 / all-1 case


def test_coincident_features_have_no_position_consistency():
    xy = np.array([[10.0, 10.0], [10.0, 10.0], [50.0, 20.0]])
    angle = np.array([0.1, 0.2, 0.3])
    c = cop_consistency(xy, angle, np.ones(3), xy, angle, np.ones(3))
    assert c[0, 1] == 0.0 and c[0, 2] == 1.0


# -- the group selection --------------------------------------------------------------------


def naive_group(weights: np.ndarray, min_mean: float, min_size: int) -> np.ndarray:
    """Reference: recompute every remaining vertex's mean weight from scratch each step."""
    alive = np.ones(len(weights), bool)
    while alive.sum() >= 2:
        idx = np.flatnonzero(alive)
        sub = weights[np.ix_(idx, idx)]
        mean = sub.sum(axis=1) / (len(idx) - 1)
        if mean.min() >= min_mean:
            break
        alive[idx[np.argmin(mean)]] = False
    if alive.sum() < min_size:
        alive[:] = False
    return alive


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("dyadic", [True, False])
def test_incremental_group_equals_naive(seed, dyadic):
    """Random symmetric weights with a planted dense group; dyadic values (multiples of 1/8,
    many ties, sums exact) check the tie rule, continuous ones the general case."""
    rng = np.random.default_rng(seed)
    m = 40
    w = rng.uniform(0, 0.4, (m, m))
    group = rng.choice(m, 12, replace=False)
    w[np.ix_(group, group)] = rng.uniform(0.5, 1.0, (12, 12))
    if dyadic:
        w = np.round(w * 8) / 8
    w = np.triu(w, 1)
    w = w + w.T
    for min_mean in (0.3, 0.5, 0.7):
        got = consistent_group(w, min_mean, 2)
        np.testing.assert_array_equal(got, naive_group(w, min_mean, 2))
    assert consistent_group(w, 0.5, 2)[group].all()


def test_group_size_limit_and_empty_result():
    *geometry, is_true = synthetic_matches(1, 20.0)
    assert not cop_inliers(*geometry, options=CopOptions(min_group_size=70)).any()
    assert cop_inliers(*geometry, options=CopOptions(min_group_size=50))[is_true].all()
    assert not consistent_group(np.zeros((5, 5)), 0.5).any()
    assert consistent_group(np.ones((3, 3)) - np.eye(3), 1.0).all()


# -- edge cases and validation --------------------------------------------------------------


def empty(m: int):
    return (np.zeros((m, 2)), np.zeros(m), np.ones(m), np.zeros((m, 2)), np.zeros(m), np.ones(m))


def test_zero_one_two_matches():
    for m in (0, 1):
        kept = cop_inliers(*empty(m))
        assert kept.dtype == bool and kept.shape == (m,) and not kept.any()
    xy = np.array([[0.0, 0.0], [30.0, 40.0]])
    angle = np.array([0.3, 2.0])
    consistent = cop_inliers(xy, angle, np.ones(2), xy + 5, angle, np.ones(2))
    assert consistent.dtype == bool and consistent.tolist() == [True, True]
    turned = cop_inliers(xy, angle, np.ones(2), xy, angle + [0.0, 2.5], np.ones(2))
    assert turned.tolist() == [False, False]
    assert cop_consistency(*empty(0)).shape == (0, 0)


def test_mismatched_shapes_raise():
    q_xy, q_a, q_s, d_xy, d_a, d_s = empty(5)
    with pytest.raises(ValueError, match=r"one row per tentative match.*db_angle 4"):
        cop_inliers(q_xy, q_a, q_s, d_xy, d_a[:4], d_s)
    with pytest.raises(ValueError, match=r"query_xy must have shape \(m, 2\), got \(5, 3\)"):
        cop_inliers(np.zeros((5, 3)), q_a, q_s, d_xy, d_a, d_s)
    with pytest.raises(ValueError, match=r"db_scale must have shape \(m,\)"):
        cop_inliers(q_xy, q_a, q_s, d_xy, d_a, d_s[:, None])
    with pytest.raises(ValueError, match="non-finite"):
        cop_inliers(q_xy, np.full(5, np.nan), q_s, d_xy, d_a, d_s)
    with pytest.raises(ValueError, match="square"):
        consistent_group(np.zeros((3, 4)), 0.5)


@pytest.mark.parametrize("change", [
    {"sector_counts": ()}, {"sector_counts": (4, 0)}, {"sector_quantization": "fuzzy"},
    {"min_group_consistency": 1.5}, {"min_group_size": 1},
])
def test_bad_options_raise(change):
    with pytest.raises(ConfigError):
        cop_inliers(*empty(3), options=dataclasses.replace(CopOptions(), **change))


def test_options_are_documented_config_fields():
    fields = {f["name"]: f for f in describe_fields(CopOptions)}
    assert fields["sector_counts"]["default"] == [4, 8, 16]
    assert fields["sector_quantization"]["choices"] == ["hard", "soft"]
    assert all(f["help"] for f in fields.values())
    assert isinstance(CopOptions().sector_counts, tuple)


@pytest.mark.parametrize("options", [
    CopOptions(),
    CopOptions(sector_quantization="soft"),
    CopOptions(sector_counts=(3, 5), min_group_consistency=0.3, min_group_size=4),
])
def test_counts_of_many_images_equal_the_one_image_verification(options):
    rng = np.random.default_rng(9)
    parts = []
    for j, m in enumerate([0, 1, 2, 3, *rng.integers(2, 60, 30).tolist()]):
        n_true = int(rng.integers(min(m, 1), m + 1))  # the helper needs a true match
        *args, _ = synthetic_matches(j, None if j % 2 else 45.0 * j, n_true=n_true,
                                     n_false=m - n_true) if m else [
            np.zeros((0, 2)), np.zeros(0), np.zeros(0), np.zeros((0, 2)), np.zeros(0),
            np.zeros(0), None]
        if j % 5 == 4:  # coincident keypoints
            args = [np.round(a / 60) * 60 if a.ndim == 2 else a for a in args]
        parts.append(args)
    joined = [np.concatenate([p[i] for p in parts]) for i in range(6)]
    offsets = np.concatenate([[0], np.cumsum([len(p[1]) for p in parts])])
    counts = cop_counts(*joined, offsets, options)
    reference = [int(cop_inliers(*(a[lo:hi] for a in joined), options).sum())
                 for lo, hi in zip(offsets[:-1], offsets[1:], strict=True)]
    np.testing.assert_array_equal(counts, reference)
    assert len(set(counts.tolist())) > 5
