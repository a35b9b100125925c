"""HE+WGC: embedding, signatures, the inverted-file scan against references, the method."""

from __future__ import annotations

import numpy as np
import pytest

from irbench.errors import ConfigError, DatasetError
from irbench.methods.base import RunContext
from irbench.methods.sift.hamming import (
    HammingIndex,
    HeWgcMethod,
    ScanSettings,
    angle_codes,
    grouped_medians,
    random_projection,
    scale_codes,
    train_embedding,
)
from irbench.methods.sift.invfile import TfIdfIndex
from tests.test_bow import BarRecorder


def _clustered(rng, n_words=4, per_word=600, dim=128, spread=0.3):
    centers = rng.standard_normal((n_words, dim))
    words = np.repeat(np.arange(n_words), per_word)
    x = centers[words] + spread * rng.standard_normal((len(words), dim))
    return x.astype(np.float32), words, centers.astype(np.float32)


def test_projection_is_orthonormal_and_seeded():
    p = random_projection(64, 128, seed=3)
    assert p.shape == (64, 128)
    np.testing.assert_allclose(p @ p.T, np.eye(64), atol=1e-5)
    np.testing.assert_array_equal(p, random_projection(64, 128, seed=3))
    assert not np.allclose(p, random_projection(64, 128, seed=4))


def test_grouped_medians_match_numpy_and_fall_back():
    rng = np.random.default_rng(0)
    values = rng.standard_normal((101, 3))
    groups = rng.integers(0, 4, 101)
    groups[groups == 3] = 2  # group 3 empty
    groups[:1] = 3  # ... but one sample: below min_count
    out = grouped_medians(values, groups, 5, min_count=2)
    for g in range(3):
        np.testing.assert_allclose(out[g], np.median(values[groups == g], axis=0), rtol=1e-6)
    for g in (3, 4):  # sparse and empty words: the global median
        np.testing.assert_allclose(out[g], np.median(values, axis=0), rtol=1e-6)


def test_medians_split_each_bit_in_half():
    rng = np.random.default_rng(1)
    x, words, _ = _clustered(rng)
    emb = train_embedding(x, words, 4, 64, seed=0, min_count=16)
    sig = emb.signatures(x, words)
    bits = np.unpackbits(sig.view(np.uint8).reshape(-1, 8), axis=1, bitorder="little")
    for w in range(4):
        frac = bits[words == w].mean(axis=0)  # per bit, over the word's training data
        assert np.all(np.abs(frac - 0.5) <= 0.01), frac


def test_perturbed_descriptor_stays_within_threshold_unrelated_do_not():
    rng = np.random.default_rng(2)
    x, words, _ = _clustered(rng)
    emb = train_embedding(x, words, 4, 64, seed=0, min_count=16)
    probe = x[::10]
    pw = words[::10]
    near = probe + 0.03 * rng.standard_normal(probe.shape).astype(np.float32)
    d_near = np.bitwise_count(emb.signatures(probe, pw) ^ emb.signatures(near, pw))
    assert (d_near <= 22).mean() >= 0.95
    # unrelated descriptors of the same word: another random member of the cell
    other = np.array([rng.choice(np.flatnonzero(words == w)) for w in pw])
    d_far = np.bitwise_count(emb.signatures(probe, pw) ^ emb.signatures(x[other], pw))
    assert (d_far <= 22).mean() <= 0.15
    assert np.median(d_far) > 26


def test_signature_bits_above_the_length_are_zero():
    rng = np.random.default_rng(3)
    x, words, _ = _clustered(rng, per_word=100)
    emb = train_embedding(x, words, 4, 20, seed=0, min_count=16)
    sig = emb.signatures(x, words)
    assert (sig >> np.uint64(20)).max() == 0 and sig.max() > 0


def test_codes():
    np.testing.assert_array_equal(angle_codes(np.array([0.0, np.pi, 2 * np.pi - 1e-9, -0.01])),
                                  [0, 128, 255, 255])
    np.testing.assert_array_equal(scale_codes(np.array([1.0, 2.0, 0.1, 1e9])), [0, 16, 0, 255])


def _random_index(rng, n_images=30, n_words=40, per_image=50):
    counts = rng.integers(0, per_image, n_images)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    f = int(offsets[-1])
    words = rng.integers(0, n_words, f)
    sig = rng.integers(0, 2**63, f, dtype=np.uint64) ^ (
        rng.integers(0, 2, f, dtype=np.uint64) << np.uint64(63))
    ang = rng.integers(0, 256, f).astype(np.uint8)
    sca = rng.integers(0, 256, f).astype(np.uint8)
    return words, offsets, sig, ang, sca


def _query(rng, words, sig, n=60):
    pick = rng.integers(0, len(words), n)
    flip = rng.integers(0, 2**20, n, dtype=np.uint64)  # near copies of database features
    return (words[pick], sig[pick] ^ flip, rng.integers(0, 256, n).astype(np.uint8),
            rng.integers(0, 256, n).astype(np.uint8))


def test_no_threshold_no_wgc_is_exactly_bow():
    rng = np.random.default_rng(4)
    words, offsets, sig, ang, sca = _random_index(rng)
    index = HammingIndex.build(words, offsets, 40, sig, ang, sca)
    bow = TfIdfIndex.build(words, offsets, 40)
    q = _query(rng, words, sig)
    ours, _ = index.scores(*q, ScanSettings(hamming_threshold=64, wgc=False))
    ref = bow.scores(q[0], np.array([0, len(q[0])]))[0]
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


def _naive_scores(index, q, s: ScanSettings):
    """Per-posting Python loop, straight from the paper's definitions."""
    words, sigs, angs, scas = q
    inv = index.invfile
    n = index.n_images
    votes = []  # (image, query feature, posting, weight, angle bin, scale bin)
    for i, w in enumerate(words):
        for p in range(inv.indptr[w], inv.indptr[w + 1]):
            h = bin(int(inv.columns["signature"][p]) ^ int(sigs[i])).count("1")
            if h > s.hamming_threshold:
                continue
            weight = float(index.idf[w]) ** 2
            if s.hamming_weighting == "gaussian":
                weight *= np.exp(-h * h / s.gaussian_sigma ** 2)
            da = (int(angs[i]) - int(inv.columns["angle"][p])) % 256
            abin = ((da + 256 // (2 * s.angle_bins)) % 256) * s.angle_bins // 256
            ds = (int(scas[i]) - int(inv.columns["scale"][p])) / (16 * s.scale_bin_octaves)
            sbin = min(max(int(np.floor(ds + 0.5)) + s.scale_bins // 2, 0), s.scale_bins - 1)
            votes.append([int(inv.image_ids[p]), i, p, weight, abin, sbin])
    if s.burstiness:
        per_q = {}
        per_p = {}
        for img, i, p, *_ in votes:
            per_q[(img, i)] = per_q.get((img, i), 0) + 1
            per_p[p] = per_p.get(p, 0) + 1
        for v in votes:
            v[3] /= np.sqrt(per_q[(v[0], v[1])] * per_p[v[2]])
    total = np.zeros(n)
    ha = np.zeros((n, s.angle_bins))
    hs = np.zeros((n, s.scale_bins))
    for img, _, _, weight, abin, sbin in votes:
        total[img] += weight
        ha[img, abin] += weight
        hs[img, sbin] += weight
    if s.wgc:
        ha = _naive_smooth(ha, s.histogram_smoothing, circular=True)
        hs = _naive_smooth(hs, s.histogram_smoothing, circular=False)
        turns = {"none": (), "upright": (0,), "upright-or-sideways": (0, 90, 270),
                 "quarter-turns": (0, 90, 180, 270)}[s.wgc_prior]
        for degrees in turns:
            code = degrees * 256 // 360
            ha[:, ((code + 256 // (2 * s.angle_bins)) % 256) * s.angle_bins // 256] *= (
                s.wgc_prior_weight)
        total = np.minimum(ha.max(axis=1), hs.max(axis=1))
    qnorm = index.query_norm(words)
    return np.array([t / (qnorm * index.norms[j]) if index.norms[j] > 0 else 0.0
                     for j, t in enumerate(total)])


def _naive_smooth(hist, width, circular):
    """Mean of the `width` bins from b - width // 2 of each bin b (wrapped or zero)."""
    n_bins = hist.shape[1]
    out = np.zeros_like(hist)
    for b in range(n_bins):
        for j in range(b - width // 2, b - width // 2 + width):
            if circular:
                out[:, b] += hist[:, j % n_bins]
            elif 0 <= j < n_bins:
                out[:, b] += hist[:, j]
    return out / width


@pytest.mark.parametrize("settings", [
    ScanSettings(),
    ScanSettings(wgc=False),
    ScanSettings(hamming_weighting="gaussian", burstiness=True),
    ScanSettings(hamming_threshold=30, angle_bins=16, scale_bins=5, scale_bin_octaves=1.0),
    ScanSettings(hamming_threshold=30, angle_bins=12, scale_bins=9, histogram_smoothing=3,
                 wgc_prior="quarter-turns", wgc_prior_weight=1.5),
    ScanSettings(hamming_threshold=30, angle_bins=6, histogram_smoothing=4,
                 wgc_prior="upright-or-sideways", wgc_prior_weight=3.0),
])
@pytest.mark.parametrize("n_images,per_image", [(30, 50), (3000, 3)])  # dense / sparse votes
def test_scan_matches_the_per_posting_reference(settings, n_images, per_image):
    rng = np.random.default_rng(5)
    words, offsets, sig, ang, sca = _random_index(rng, n_images=n_images, per_image=per_image)
    index = HammingIndex.build(words, offsets, 40, sig, ang, sca)
    q = _query(rng, words, sig)
    ours, scanned = index.scores(*q, settings)
    assert scanned == sum(index.invfile.indptr[w + 1] - index.invfile.indptr[w] for w in q[0])
    np.testing.assert_allclose(ours, _naive_scores(index, q, settings), rtol=1e-5, atol=1e-7)
    assert ours.max() > 0


def test_wgc_consistent_matches_beat_shuffled_ones():
    rng = np.random.default_rng(6)
    m = 80
    words = rng.permutation(200)[:m]
    sig = rng.integers(0, 2**62, m, dtype=np.uint64)
    q_ang = rng.uniform(0, 2 * np.pi, m)
    q_scale = rng.uniform(3, 40, m)
    # database image 0: one rotation (+30 degrees) and one scale change (x1.6) for all
    consistent_ang = angle_codes(q_ang - np.deg2rad(30))
    consistent_sca = scale_codes(q_scale * 1.6)
    # database image 1: the same words and signatures, orientations/scales shuffled
    shuffled_ang = angle_codes(rng.uniform(0, 2 * np.pi, m))
    shuffled_sca = scale_codes(rng.uniform(3, 40, m))
    db_words = np.concatenate([words, words])
    offsets = np.array([0, m, 2 * m, 2 * m, 2 * m])  # two empty images: idf = log 2
    index = HammingIndex.build(db_words, offsets, 200, np.concatenate([sig, sig]),
                               np.concatenate([consistent_ang, shuffled_ang]),
                               np.concatenate([consistent_sca, shuffled_sca]))
    q = (words, sig, angle_codes(q_ang), scale_codes(q_scale))
    with_wgc, _ = index.scores(*q, ScanSettings())
    without, _ = index.scores(*q, ScanSettings(wgc=False))
    assert without[0] == pytest.approx(without[1])  # HE alone cannot tell them apart
    assert with_wgc[0] == pytest.approx(without[0])  # every vote in one peak
    assert with_wgc[0] > 2 * with_wgc[1]


def _one_image_index(rotations_degrees):
    """One database image whose features match the query's (one word each, equal scale)
    rotated by the given angles, and one empty image (so every idf is log 2)."""
    m = len(rotations_degrees)
    rng = np.random.default_rng(8)
    words = np.arange(m)
    sig = rng.integers(0, 2**62, m, dtype=np.uint64)
    q_ang = rng.integers(0, 256, m)
    db_ang = ((q_ang - np.asarray(rotations_degrees) * 256 // 360) % 256).astype(np.uint8)
    sca = np.full(m, 80, np.uint8)
    index = HammingIndex.build(words, np.array([0, m, m]), m, sig, db_ang, sca)
    return index, (words, sig, q_ang.astype(np.uint8), sca)


@pytest.mark.parametrize("minority_rotation,prior,wins", [
    (0, "upright", True), (90, "upright", False), (90, "upright-or-sideways", True),
    (270, "upright-or-sideways", True), (180, "upright-or-sideways", False),
    (180, "quarter-turns", True), (0, "none", False),
])
def test_wgc_prior_changes_which_angle_peak_wins(minority_rotation, prior, wins):
    # 6 matches rotated by 45 degrees, 4 by a minority rotation; one scale for all 10
    index, q = _one_image_index([45] * 6 + [minority_rotation] * 4)
    plain, _ = index.scores(*q, ScanSettings())
    favoured, _ = index.scores(*q, ScanSettings(wgc_prior=prior, wgc_prior_weight=2.0))
    # the peak is 6 votes (45 degrees) without the prior, 4 * 2 = 8 when it favours the 4
    assert favoured[0] == pytest.approx(plain[0] * (8 / 6 if wins else 1.0))


def test_wgc_prior_is_capped_by_the_scale_peak():
    # all 10 at no rotation: the angle peak doubles, the scale peak (10) stays the minimum
    index, q = _one_image_index([0] * 10)
    plain, _ = index.scores(*q, ScanSettings())
    favoured, _ = index.scores(*q, ScanSettings(wgc_prior="upright", wgc_prior_weight=2.0))
    assert favoured[0] == pytest.approx(plain[0])


def test_wgc_prior_none_or_weight_one_changes_nothing():
    rng = np.random.default_rng(9)
    words, offsets, sig, ang, sca = _random_index(rng)
    index = HammingIndex.build(words, offsets, 40, sig, ang, sca)
    q = _query(rng, words, sig)
    plain, _ = index.scores(*q, ScanSettings(hamming_threshold=30))
    for settings in (ScanSettings(hamming_threshold=30, wgc_prior_weight=5.0),
                     ScanSettings(hamming_threshold=30, wgc_prior="quarter-turns",
                                  wgc_prior_weight=1.0)):
        np.testing.assert_array_equal(index.scores(*q, settings)[0], plain)


def test_posting_layout_is_at_most_16_bytes():
    rng = np.random.default_rng(7)
    words, offsets, sig, ang, sca = _random_index(rng)
    inv = HammingIndex.build(words, offsets, 40, sig, ang, sca).invfile
    per_posting = inv.image_ids.itemsize + sum(c.itemsize for c in inv.columns.values())
    assert per_posting == 14
    assert inv.image_ids.dtype == np.uint32 and inv.columns["signature"].dtype == np.uint64


@pytest.mark.parametrize("field,value", [("hamming_threshold", 65), ("signature_bits", 0),
                                         ("hamming_weighting", "cosine"), ("angle_bins", 0),
                                         ("scale_bin_octaves", 0.0),
                                         ("wgc_prior", "diagonal"),
                                         ("wgc_prior_weight", 0.5)])
def test_bad_settings_are_refused(field, value):
    with pytest.raises(ConfigError, match=field):
        HeWgcMethod(HeWgcMethod.Config(**{field: value}))


def _demo(tmp_path, seed=0):
    from irbench.datasets import load

    return load("demo", objects=6, database_views=4, distractors=8, query_views=1, seed=seed)


def test_he_wgc_on_demo_ranks_positives_first(tmp_path):
    from irbench.harness.evaluate import evaluate

    ds = _demo(tmp_path)
    bars = BarRecorder()
    method = HeWgcMethod(context=RunContext.in_memory(dataset_id="demo@test", progress=bars))
    method.fit(ds.train)
    method.index(ds.database)
    ranks, scores = method.query(ds.queries, len(ds.database))
    assert ranks.shape == (len(ds.queries), len(ds.database))
    words = method.info()["vocabulary_size"]
    n = len(ds.database)
    assert bars.done(f"he-wgc: k-means ({words} words)") == method.config.kmeans_iterations
    assert bars.done("he-wgc: inverted file (2 passes)") == 2 * n
    info = method.info()
    assert info["postings"] == info["database_features"]
    assert info["postings_scanned"] > 0
    metrics = evaluate(ranks, ds.ground_truth, ds.protocol)
    assert metrics["settings"][""]["map"] > 0.5


def test_vocabulary_on_the_independent_set(tmp_path):
    ds = _demo(tmp_path)
    other = _demo(tmp_path, seed=1)
    loaded = []

    def load_dataset(name):
        loaded.append(name)
        if name != "paris-like":
            raise DatasetError(f"dataset {name!r} is not installed")
        return other

    ctx = RunContext.in_memory(dataset_id="demo@test", independent_set="paris-like",
                               load_dataset=load_dataset)
    method = HeWgcMethod(context=ctx)
    method.fit(ds.train)
    assert loaded == ["paris-like"]
    assert method.info()["vocabulary_trained_on"] == f"{other.name}@{other.version}"
    assert method.info()["n_training_images"] == len(other.database)

    ctx = RunContext.in_memory(dataset_id="demo@test", independent_set="absent",
                               load_dataset=load_dataset)
    with pytest.raises(DatasetError, match="bench data fetch absent"):
        HeWgcMethod(context=ctx).fit(ds.train)
    # an explicit source wins over the dataset's independent set
    method = HeWgcMethod(HeWgcMethod.Config(vocabulary_source="train"), ctx)
    method.fit(ds.train)
    assert method.info()["vocabulary_trained_on"] == "train"
    with pytest.raises(ConfigError, match="no train split"):
        HeWgcMethod(HeWgcMethod.Config(vocabulary_source="train"), ctx).fit([])
