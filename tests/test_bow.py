"""The `bow` method and its SIFT substrate: keypoints, vocabulary, inverted file."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from irbench.core.cache import Cache
from irbench.core.search import topk_from_scores
from irbench.datasets.base import Image, Query
from irbench.errors import ConfigError, ImageReadError
from irbench.methods.base import RunContext
from irbench.methods.sift.bow import BowConfig, BowMethod
from irbench.methods.sift.invfile import InvertedFile, TfIdfIndex, ranges
from irbench.methods.sift.keypoints import (
    SiftParams,
    extract_features,
    extract_image,
    rootsift,
    sift_params,
)
from irbench.methods.sift.vocabulary import (
    Vocabulary,
    load_vocabulary_file,
    resolve_vocabulary_size,
    sample_indices,
    save_vocabulary,
    train_kmeans,
    training_sample_size,
)

# -- synthetic images ---------------------------------------------------------------------


def scene(seed: int, size: int = 160) -> np.ndarray:
    """A gray textured scene: blurred noise with random ellipses and rectangles (BGR)."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur((rng.random((size, size)) * 255).astype(np.uint8), (0, 0), 3)
    img = cv2.normalize(img, None, 40, 200, cv2.NORM_MINMAX)
    for _ in range(14):
        c = tuple(int(v) for v in rng.integers(10, size - 10, 2))
        color = int(rng.integers(0, 256))
        if rng.random() < 0.5:
            axes = tuple(int(v) for v in rng.integers(3, 16, 2))
            cv2.ellipse(img, c, axes, float(rng.uniform(0, 180)), 0, 360, color, -1)
        else:
            d = rng.integers(4, 18, 2)
            cv2.rectangle(img, c, (c[0] + int(d[0]), c[1] + int(d[1])), color, -1)
    return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)


def transformed(img: np.ndarray, angle: float = 8.0, scale: float = 0.92) -> np.ndarray:
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    return cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT)


def write(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)
    return path


def make_set(root: Path, n_db: int = 12, queries_of: tuple[int, ...] = (0, 3, 7, 11),
             n_train: int = 0) -> tuple[list[Image], list[Query], list[Image]]:
    """`n_db` scenes, transformed copies of some of them as queries, optional train scenes."""
    database = [Image(id=f"db{i}", path=write(root / f"db{i}.png", scene(i)))
                for i in range(n_db)]
    queries = [Query(id=f"q{i}", path=write(root / f"q{i}.png", transformed(scene(i))))
               for i in queries_of]
    train = [Image(id=f"tr{i}", path=write(root / f"tr{i}.png", scene(1000 + i)))
             for i in range(n_train)]
    return database, queries, train


def small_config(**kw) -> BowConfig:
    return dataclasses.replace(BowConfig(vocabulary_size=256, kmeans_iterations=10), **kw)


# -- keypoints ----------------------------------------------------------------------------


def test_extract_image_arrays(tmp_path):
    path = write(tmp_path / "a.png", scene(0))
    out = extract_image(path, None, SiftParams())
    n = len(out["x"])
    assert n > 50
    assert out["descriptors"].shape == (n, 128) and out["descriptors"].dtype == np.uint8
    for name in ("x", "y", "scale", "angle", "response"):
        assert out[name].shape == (n,) and out[name].dtype == np.float32
    assert out["x"].min() >= -0.5 and out["x"].max() < 160
    assert out["y"].min() >= -0.5 and out["y"].max() < 160
    assert (out["scale"] > 0).all()
    assert out["angle"].min() >= 0 and out["angle"].max() < 2 * math.pi + 1e-6
    # the cap keeps the strongest responses
    capped = extract_image(path, None, SiftParams(max_keypoints=20))
    assert len(capped["x"]) == 20
    assert capped["response"].min() >= np.sort(out["response"])[-20] - 1e-6


def test_flat_image_has_no_keypoints(tmp_path):
    path = write(tmp_path / "flat.png", np.full((64, 64, 3), 128, np.uint8))
    out = extract_image(path, None, SiftParams())
    assert out["descriptors"].shape == (0, 128)
    assert all(out[k].shape == (0,) for k in ("x", "y", "scale", "angle"))


def test_rootsift_property():
    rng = np.random.default_rng(0)
    d = rng.integers(0, 256, size=(50, 128)).astype(np.uint8)
    d[3] = 0
    r = rootsift(d)
    assert r.dtype == np.float32
    norms = np.linalg.norm(r, axis=1)
    np.testing.assert_allclose(np.delete(norms, 3), 1.0, atol=1e-5)
    assert norms[3] == 0
    # squaring gives back the L1-normalized SIFT vector (the Hellinger mapping)
    d64 = d.astype(np.float64)
    l1 = np.maximum(d64.sum(1, keepdims=True), 1e-12)
    np.testing.assert_allclose(r.astype(np.float64) ** 2, d64 / l1, atol=1e-6)


def test_query_crop_is_described_in_full_image_frame(tmp_path):
    img = scene(5)
    path = write(tmp_path / "full.png", img)
    box = (30.7, 20.2, 140.0, 150.9)  # crop origin: floor -> (30, 20)
    crop_path = write(tmp_path / "crop.png", img[20:151, 30:140])
    ctx = RunContext(cache=Cache(tmp_path / "cache"), workers=1)
    params = SiftParams()
    feats = extract_features([Query("q", path, box=box, crop=True)], params, ctx)
    ref = extract_image(crop_path, None, params)
    assert feats.n_features == len(ref["x"]) > 0
    # stored in steps of 1/128 pixel (a 160-pixel image): within half a step
    np.testing.assert_allclose(feats.x, ref["x"] + 30, atol=1 / 256 + 1e-4)
    np.testing.assert_allclose(feats.y, ref["y"] + 20, atol=1 / 256 + 1e-4)
    np.testing.assert_array_equal(feats.descriptors, ref["descriptors"])
    # crop=False: the whole image, the box ignored
    full = extract_features([Query("q", path, box=box, crop=False)], params, ctx)
    assert full.n_features == len(extract_image(path, None, params)["x"])


def test_downscaled_image_keeps_original_frame(tmp_path):
    path = write(tmp_path / "big.png", cv2.resize(scene(2), (320, 320)))
    small = extract_image(path, None, SiftParams(max_image_side=160))
    full = extract_image(path, None, SiftParams(max_image_side=0))
    assert len(small["x"]) > 0
    assert small["x"].max() < 320 and small["y"].max() < 320
    assert small["x"].max() > 200  # mapped back, not left in the 160-pixel frame
    # each downscaled keypoint lies near a full-resolution one
    d = np.hypot(small["x"][:, None] - full["x"][None], small["y"][:, None] - full["y"][None])
    assert np.median(d.min(axis=1)) < 2.0


def test_corrupt_image_raises_naming_file(tmp_path):
    good = Image("good", write(tmp_path / "good.png", scene(1)))
    bad_path = tmp_path / "broken_image.png"
    bad_path.write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    ctx = RunContext(cache=Cache(tmp_path / "cache"), workers=1)
    with pytest.raises(ImageReadError, match="broken_image.png"):
        extract_features([good, Image("bad", bad_path)], SiftParams(), ctx)
    with pytest.raises(ImageReadError, match="missing.png"):
        extract_features([Image("m", tmp_path / "missing.png")], SiftParams(), ctx)


def test_two_workers_match_one_and_propagate_errors(tmp_path):
    images = [Image(f"i{i}", write(tmp_path / f"i{i}.png", scene(i))) for i in range(5)]
    params = SiftParams(max_keypoints=100)
    one = extract_features(images, params, RunContext(cache=Cache(tmp_path / "c1"), workers=1))
    two = extract_features(images, params, RunContext(cache=Cache(tmp_path / "c2"), workers=2))
    np.testing.assert_array_equal(one.offsets, two.offsets)
    np.testing.assert_array_equal(one.descriptors, two.descriptors)
    np.testing.assert_array_equal(one.x, two.x)
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"garbage")
    with pytest.raises(ImageReadError, match="corrupt.jpg"):
        extract_features([*images, Image("bad", bad)], params,
                         RunContext(cache=Cache(tmp_path / "c3"), workers=2))


# -- vocabulary ---------------------------------------------------------------------------


def test_vocabulary_size_rules():
    assert resolve_vocabulary_size(100, 5000) == 100
    assert resolve_vocabulary_size(20_000, 100_000, 5) == 20_000  # exactly 5 per word
    # too few descriptors: shrunk to descriptors / min_per_word, never above them
    assert resolve_vocabulary_size(20_000, 99_999, 5) == 19_999
    assert resolve_vocabulary_size(5000, 100) == 100
    assert resolve_vocabulary_size(5000, 3, 5) == 1
    with pytest.raises(ConfigError):
        resolve_vocabulary_size(0, 5000)
    with pytest.raises(ConfigError):
        resolve_vocabulary_size(100, 0)
    # the training sample grows with the vocabulary
    assert training_sample_size(1000, 40, 10**9) == 40_000
    assert training_sample_size(20_000, 40, 10**9) == 800_000
    assert training_sample_size(20_000, 40, 5000) == 5000
    assert training_sample_size(20_000, 0, 5000) == 5000


def test_hnsw_kmeans_is_seeded_and_close_to_exact():
    rng = np.random.default_rng(0)
    centres = rng.random((40, 16), dtype=np.float32) * 10
    x = (centres[rng.integers(0, 40, 4000)] + rng.random((4000, 16), dtype=np.float32))
    c1 = train_kmeans(x, 40, niter=8, seed=1, hnsw=True)
    c2 = train_kmeans(x, 40, niter=8, seed=1, hnsw=True)
    np.testing.assert_array_equal(c1, c2)
    exact = Vocabulary(c1).quantize(x)
    approx = Vocabulary(c1, hnsw=True).quantize(x)
    assert (exact == approx).mean() > 0.99


def _kmeans_in_one_faiss_call(x, k, niter, seed, hnsw):
    """What `train_kmeans` computed before it reported progress: one `Clustering.train`
    of `niter` iterations (its centroids, and its iteration statistics)."""
    import faiss

    from irbench.methods.sift.vocabulary import _hnsw_index

    n, d = x.shape
    clustering = faiss.Clustering(d, k)
    clustering.niter = niter
    clustering.seed = seed
    clustering.verbose = False
    clustering.max_points_per_centroid = max(256, -(-n // k) + 1)
    clustering.min_points_per_centroid = 1
    clustering.train(x, _hnsw_index(d) if hnsw else faiss.IndexFlatL2(d))
    stats = clustering.iteration_stats
    return (faiss.vector_to_array(clustering.centroids).reshape(k, d),
            [stats.at(i) for i in range(stats.size())])


@pytest.fixture
def one_faiss_thread():
    """faiss on one thread: OpenMP threads that share busy cores wait on each other, and
    this test compares runs of the same thread count (both paths use faiss's default)."""
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


@pytest.mark.parametrize("hnsw", [False, True], ids=["exact", "hnsw"])
def test_kmeans_reports_each_iteration_and_keeps_the_centroids_of_one_faiss_call(
        hnsw, one_faiss_thread):
    """One faiss call per iteration, for the progress bar, gives the centroids of one call
    of `niter` iterations bit for bit. The case has clusters that go empty and are split
    (k close to n, duplicated points), faiss's early stop (objective unchanged), and an
    HNSW graph large enough that the random levels of its nodes change assignments."""
    x = np.random.default_rng(0).random((1200, 32), dtype=np.float32)
    x[:40] = x[0]
    expected, stats = _kmeans_in_one_faiss_call(x, 1000, 20, 0, hnsw)
    assert sum(s.nsplit for s in stats) > 0  # the case exercises what it claims
    assert len(stats) < 20  # faiss stopped early
    steps = []
    centroids = train_kmeans(x, 1000, niter=20, seed=0, hnsw=hnsw, progress=steps.append)
    assert np.array_equal(centroids, expected)
    # a step per iteration run, the rest at once when faiss stops early
    assert steps == [1] * (len(stats) - 1) + [20 - len(stats) + 1]
    steps.clear()
    expected, _ = _kmeans_in_one_faiss_call(x, 1000, 3, 0, hnsw)
    centroids = train_kmeans(x, 1000, niter=3, seed=0, hnsw=hnsw, progress=steps.append)
    assert np.array_equal(centroids, expected) and steps == [1, 1, 1]


def test_vocabulary_file_round_trip_and_errors(tmp_path):
    c = np.random.default_rng(0).random((10, 128), dtype=np.float32)
    save_vocabulary(tmp_path / "v.npy", c)
    back, digest = load_vocabulary_file(tmp_path / "v.npy")
    np.testing.assert_array_equal(back, c)
    assert len(digest) == 64
    with pytest.raises(ConfigError, match="not found"):
        load_vocabulary_file(tmp_path / "missing.npy")
    np.save(tmp_path / "bad.npy", np.zeros((10, 64), np.float32))
    with pytest.raises(ConfigError, match=r"bad\.npy.*shape"):
        load_vocabulary_file(tmp_path / "bad.npy")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(ConfigError, match="junk.npy"):
        load_vocabulary_file(tmp_path / "junk.npy")
    c[3, 5] = np.nan
    np.save(tmp_path / "nan.npy", c)
    with pytest.raises(ConfigError, match="finite"):
        load_vocabulary_file(tmp_path / "nan.npy")


def test_sampling_and_kmeans_are_seeded():
    a = sample_indices(1000, 100, seed=3)
    assert len(a) == 100 and len(np.unique(a)) == 100 and (np.diff(a) > 0).all()
    np.testing.assert_array_equal(a, sample_indices(1000, 100, seed=3))
    assert not np.array_equal(a, sample_indices(1000, 100, seed=4))
    np.testing.assert_array_equal(sample_indices(50, 100, seed=0), np.arange(50))
    np.testing.assert_array_equal(sample_indices(50, 0, seed=0), np.arange(50))
    x = np.random.default_rng(0).random((500, 8), dtype=np.float32)
    c1 = train_kmeans(x, 16, niter=5, seed=1)
    c2 = train_kmeans(x, 16, niter=5, seed=1)
    np.testing.assert_array_equal(c1, c2)
    words = Vocabulary(c1).quantize(x, batch_size=64)
    brute = np.argmin(((x[:, None, :] - c1[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(words, brute)


# -- inverted file ------------------------------------------------------------------------


def dense_tfidf(words, offsets, n_words, idf=None):
    """Naive dense reference: tf matrix, idf = log(N / n_w), rows L2-normalized."""
    n = len(offsets) - 1
    tf = np.zeros((n, n_words))
    for i in range(n):
        for w in words[offsets[i]:offsets[i + 1]]:
            tf[i, w] += 1
    if idf is None:
        df = (tf > 0).sum(0)
        idf = np.array([math.log(n / c) if c else 0.0 for c in df])
    v = tf * idf
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return np.divide(v, norms, out=np.zeros_like(v), where=norms > 0), idf


def random_bow(rng, n, n_words, max_len, empty=()):
    counts = rng.integers(1, max_len, n)
    counts[list(empty)] = 0
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    words = rng.zipf(1.5, int(offsets[-1])) % n_words
    return words.astype(np.uint32), offsets


def test_ranges():
    np.testing.assert_array_equal(ranges([5, 0, 9], [2, 0, 3]), [5, 6, 9, 10, 11])
    assert ranges([], []).size == 0


def test_invfile_csr_matches_dense_tfidf():
    rng = np.random.default_rng(0)
    n_words = 55  # words 50..54 occur nowhere
    words, offsets = random_bow(rng, 40, 50, 60, empty=(5,))
    index = TfIdfIndex.build(words, offsets, n_words)
    inv = index.invfile
    # CSR structure
    assert inv.indptr.dtype == np.int64 and inv.indptr.shape == (n_words + 1,)
    assert inv.image_ids.dtype == np.uint32 and inv.columns["weight"].dtype == np.float32
    assert inv.indptr[0] == 0 and (np.diff(inv.indptr) >= 0).all()
    dense, idf = dense_tfidf(words, offsets, n_words)
    tf = _tf(words, offsets, n_words)
    assert inv.n_postings == int((tf > 0).sum())  # one per (word, image)
    assert (idf[50:] == 0).all() and (inv.list_lengths()[50:] == 0).all()
    for w in range(n_words):
        ids = inv.image_ids[inv.postings(w)].astype(np.int64)
        assert (np.diff(ids) > 0).all()  # sorted, one posting per (word, image)
        np.testing.assert_allclose(inv.columns["weight"][inv.postings(w)], dense[ids, w],
                                   atol=1e-6)
    np.testing.assert_allclose(index.idf, idf, atol=1e-6)
    np.testing.assert_array_equal(inv.document_frequency(), (tf > 0).sum(0))
    assert index.nbytes == inv.indptr.nbytes + inv.image_ids.nbytes + inv.columns["weight"].nbytes \
        + index.idf.nbytes
    # scores against the naive dense computation
    qwords, qoffsets = random_bow(rng, 7, n_words, 30, empty=(2,))  # query 2 is empty
    qdense, _ = dense_tfidf(qwords, qoffsets, n_words, idf=idf)
    expected = qdense @ dense.T
    got = index.scores(qwords, qoffsets)
    assert got.shape == (7, 40) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert (got[2] == 0).all()
    np.testing.assert_array_equal(index.scores(qwords, qoffsets, block_elements=80), got)
    for block in (1 << 22, 80, 1):  # all queries in one block, two per block, one
        ranks, top = index.search(qwords, qoffsets, 10, block_elements=block)
        ref_ranks, ref_top = topk_from_scores(got, 10)
        np.testing.assert_array_equal(ranks, ref_ranks)
        np.testing.assert_array_equal(top, ref_top)
    np.testing.assert_array_equal(ranks[2], np.arange(10))  # all-zero scores: lower index first
    ranks, top = index.search(qwords, qoffsets, 100)
    assert ranks.shape == (7, 40)


def _tf(words, offsets, n_words):
    n = len(offsets) - 1
    img = np.repeat(np.arange(n), np.diff(offsets))
    tf = np.zeros((n, n_words))
    np.add.at(tf, (img, words.astype(np.int64)), 1)
    return tf


def test_invfile_per_feature_postings_with_columns():
    rng = np.random.default_rng(1)
    words = rng.integers(0, 10, 200)
    images = rng.integers(0, 30, 200)
    sig = rng.integers(0, 2**63, 200, dtype=np.uint64)
    inv = InvertedFile.from_postings(words, images, 10, 30, {"signature": sig,
                                                             "feature": np.arange(200)})
    assert inv.n_postings == 200 and inv.columns["signature"].dtype == np.uint64
    feat = inv.columns["feature"]
    np.testing.assert_array_equal(inv.columns["signature"], sig[feat])
    np.testing.assert_array_equal(inv.image_ids, images[feat])
    np.testing.assert_array_equal(inv.word_of_posting(), words[feat])
    np.testing.assert_array_equal(inv.list_lengths(), np.bincount(words, minlength=10))
    df = [len(set(images[words == w])) for w in range(10)]
    np.testing.assert_array_equal(inv.document_frequency(), df)
    pos, src = inv.gather(np.array([3, 7]))
    assert set(feat[pos]) == set(np.flatnonzero(np.isin(words, [3, 7])))
    np.testing.assert_array_equal(np.array([3, 7])[src], inv.word_of_posting()[pos])
    assert inv.nbytes == inv.indptr.nbytes + 200 * 4 + sig.nbytes + feat.nbytes


# -- the method ---------------------------------------------------------------------------


class BarRecorder:
    """A Progress that records each bar's total and steps."""

    def __init__(self):
        self.bars = {}

    @contextlib.contextmanager
    def task(self, description, total=None):
        steps = []
        self.bars[description] = (total, steps)
        yield lambda n=1, status=None: steps.append(n)

    def done(self, description):
        """The total of a bar, which its steps (each of at least 1) must have reached."""
        total, steps = self.bars[description]
        assert sum(steps) == total and min(steps) >= 1, (description, total, steps)
        return total


def run_bow(root: Path, cache_dir: Path, config: BowConfig | None = None, *, n_train: int = 0,
            workers: int = 1, progress=None):
    database, queries, train = make_set(root, n_train=n_train)
    ctx = RunContext(cache=Cache(cache_dir), workers=workers, dataset_id="synthetic@1",
                     **({"progress": progress} if progress is not None else {}))
    method = BowMethod(config or small_config(), ctx)
    method.fit(train)
    method.index(database)
    ranks, scores = method.query(queries, 5)
    return method, ranks, scores


def test_bow_end_to_end_finds_originals(tmp_path):
    method, ranks, scores = run_bow(tmp_path / "data", tmp_path / "cache")
    assert ranks.dtype == np.int64 and scores.dtype == np.float32
    assert ranks.shape == scores.shape == (4, 5)
    np.testing.assert_array_equal(ranks[:, 0], [0, 3, 7, 11])
    assert (np.diff(scores, axis=1) <= 0).all()
    assert (scores[:, 0] > scores[:, 1]).all()
    info = method.info()
    assert info["vocabulary_trained_on"] == "database"
    assert info["vocabulary_size"] == 256
    assert info["n_training_descriptors"] == info["database_features"] > 0
    assert info["postings"] > 0
    assert method.index_bytes() > 0
    json.dumps(info)  # goes into the run record


def test_bow_bars_for_kmeans_and_the_inverted_file_reach_their_totals(tmp_path):
    bars = BarRecorder()
    run_bow(tmp_path / "data", tmp_path / "cache", progress=bars)
    assert bars.done("bow: k-means (256 words)") == 10  # kmeans_iterations
    assert bars.done("bow: inverted file (2 passes)") == 24  # 12 images
    again = BarRecorder()  # all cached: neither is computed, so no bar opens
    run_bow(tmp_path / "data", tmp_path / "cache", progress=again)
    assert not {d for d in again.bars if "k-means" in d or "inverted file" in d}


def test_bow_index_is_cached_memory_mapped_and_ranks_the_same(tmp_path):
    from irbench.core.cache import _memmap_of

    method, ranks, scores = run_bow(tmp_path / "data", tmp_path / "cache")
    again, ranks2, scores2 = run_bow(tmp_path / "data", tmp_path / "cache")
    assert [e.hit for e in method.context.cache.events if e.kind == "tfidf-index"] == [False]
    assert [e.hit for e in again.context.cache.events if e.kind == "tfidf-index"] == [True]
    for m in (method, again):
        assert _memmap_of(m._index.invfile.columns["weight"]) is not None
    np.testing.assert_array_equal(ranks2, ranks)
    np.testing.assert_array_equal(scores2, scores)


def test_bow_trains_on_train_split_and_scales_the_sample(tmp_path, caplog):
    cfg = small_config(vocabulary_size=200, training_descriptors_per_word=2,
                       min_descriptors_per_word=1)
    method, ranks, _ = run_bow(tmp_path / "data", tmp_path / "cache", cfg, n_train=3)
    info = method.info()
    assert info["vocabulary_trained_on"] == "train"
    assert info["n_training_images"] == 3
    assert info["n_training_descriptors"] == min(400, info["n_available_training_descriptors"])
    assert info["vocabulary_size"] == info["vocabulary_size_requested"] == 200
    assert info["vocabulary_reused"] is False and "vocabulary_shrunk" not in info
    assert ranks[0, 0] == 0
    # more words than the training set affords: shrunk, warned about and recorded
    big = small_config(vocabulary_size=10**6, min_descriptors_per_word=5)
    with caplog.at_level("WARNING"):
        method, _, _ = run_bow(tmp_path / "data", tmp_path / "cache", big, n_train=3)
    info = method.info()
    assert info["vocabulary_size_requested"] == 10**6
    assert info["vocabulary_size"] == info["n_available_training_descriptors"] // 5
    assert "per word" in info["vocabulary_shrunk"]
    assert "instead of vocabulary_size=1000000" in caplog.text


def test_bow_with_a_vocabulary_file(tmp_path):
    method, r1, s1 = run_bow(tmp_path / "data", tmp_path / "cache")
    save_vocabulary(tmp_path / "v.npy", method._vocabulary.centroids)
    cfg = small_config(vocabulary_source=f"file:{tmp_path / 'v.npy'}")
    m2, r2, s2 = run_bow(tmp_path / "data", tmp_path / "cache2", cfg)
    info = m2.info()
    assert info["vocabulary_trained_on"] == f"file:{tmp_path / 'v.npy'}"
    assert info["vocabulary_id"].startswith("file-")
    assert not any(e.kind == "vocabulary" for e in m2.context.cache.events)
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_allclose(s1, s2, rtol=1e-5)


def test_bow_is_deterministic(tmp_path):
    _, r1, s1 = run_bow(tmp_path / "data", tmp_path / "cache1")
    _, r2, s2 = run_bow(tmp_path / "data", tmp_path / "cache2")
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_array_equal(s1, s2)


def test_bow_reuses_cache(tmp_path):
    m1, r1, s1 = run_bow(tmp_path / "data", tmp_path / "cache")
    assert not any(e.hit for e in m1.context.cache.events)
    m2, r2, s2 = run_bow(tmp_path / "data", tmp_path / "cache")
    hits = {e.kind for e in m2.context.cache.events if e.hit}
    assert {"vocabulary", "words"} <= hits  # the SIFT features are not even loaded
    assert not any(not e.hit for e in m2.context.cache.events)
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_array_equal(s1, s2)
    # a different vocabulary reuses the SIFT features but nothing after them
    m3, _, _ = run_bow(tmp_path / "data", tmp_path / "cache", small_config(vocabulary_size=128))
    events = {(e.kind, e.hit) for e in m3.context.cache.events}
    assert ("sift/features", True) in events
    assert ("vocabulary", False) in events


def test_bow_config_fields_and_sift_params():
    cfg = BowConfig()
    assert cfg.vocabulary_size == 20_000 and cfg.max_keypoints == 2000 and cfg.rootsift
    p = sift_params(cfg)
    assert p == SiftParams()
    assert BowMethod.name == "bow" and BowMethod.description


def test_one_vocabulary_serves_every_sift_method_with_its_defaults(tmp_path):
    """he-wgc, then bow and a verifier on the same data: one vocabulary is trained, the
    later runs say they reused it (the defaults of their vocabulary fields agree)."""
    from irbench.methods.registry import create_method

    names = ["he-wgc", "bow", "geometric-coding"]
    fields = [create_method(n).stage_fields("vocabulary") for n in names]
    assert fields[0] == fields[1] == fields[2]
    database, queries, train = make_set(tmp_path / "data")
    cache = Cache(tmp_path / "cache")
    infos = []
    for name in names:
        ctx = RunContext(cache=cache, dataset_id="synthetic@1")
        method = create_method(name, {"vocabulary_size": 256, "kmeans_iterations": 5},
                               context=ctx)
        method.fit(train)
        method.index(database)
        method.query(queries, 5)
        infos.append(method.info())
    assert [i["vocabulary_reused"] for i in infos] == [False, True, True]
    assert len({i["vocabulary_id"] for i in infos}) == 1
    trained = [e for e in cache.events if e.kind == "vocabulary" and not e.hit]
    assert len(trained) == 1


def test_stored_geometry_is_quantised_within_its_steps(tmp_path):
    """The extraction stores 7 bytes of geometry per feature; decoded, it is within
    half a position step / 1/65,536 turn / 1/16 octave of OpenCV's values, and its angle and
    scale codes give exactly WGC's codes of the float32 values (HE+WGC does not move)."""
    from irbench.methods.sift.keypoints import (
        angle_codes,
        compact_geometry,
        decode_angle,
        decode_scale,
        scale_codes,
        wgc_angle_codes,
    )

    path = write(tmp_path / "s.png", scene(3))
    ref = extract_image(path, None, SiftParams())
    ctx = RunContext(cache=Cache(tmp_path / "cache"), workers=1)
    feats = extract_features([Image("s", path)], SiftParams(), ctx)
    assert feats.xq.dtype == np.uint16 and feats.angle_code.dtype == np.uint16
    assert feats.n_features == len(ref["x"]) > 0
    half_step = 2.0 ** (int(feats.xy_exponent[0]) - 1)
    assert np.abs(feats.x - ref["x"]).max() <= half_step + 1e-6
    assert np.abs(feats.y - ref["y"]).max() <= half_step + 1e-6
    turn = np.abs(feats.angle - ref["angle"])
    assert np.minimum(turn, 2 * math.pi - turn).max() <= math.pi / 65536 + 1e-6
    assert np.abs(np.log2(feats.scale / ref["scale"])).max() <= 1 / 32 + 1e-6
    np.testing.assert_array_equal(wgc_angle_codes(feats.angle_code), angle_codes(ref["angle"]))
    np.testing.assert_array_equal(feats.scale_code, scale_codes(ref["scale"]))
    # the codes survive a decode / encode round trip (a stored feature is a fixed point)
    again = compact_geometry({"descriptors": feats.descriptors, "x": feats.x, "y": feats.y,
                              "image_shape": ref["image_shape"],
                              "angle": decode_angle(feats.angle_code),
                              "scale": decode_scale(feats.scale_code)})
    for name in ("xq", "yq", "angle_code", "scale_code", "xy_exponent"):
        np.testing.assert_array_equal(again[name], getattr(feats, name))


def test_position_step_follows_the_image_size():
    from irbench.methods.sift.keypoints import decode_xy, xy_exponent

    assert xy_exponent(320, 240) == -7 and xy_exponent(1024, 768) == -5
    assert xy_exponent(65535, 10) == 0 and xy_exponent(200000, 10) == 2
    assert xy_exponent(8, 8) == -8  # the finest step
    for side in (1, 255, 256, 1023, 1024, 4095, 65535, 65536, 10**6):
        e = xy_exponent(side, 1)
        edge = np.array([-0.5, side - 0.5])  # the outermost pixel edges
        q = np.rint((edge + 0.5) * 2.0 ** -e)
        assert q.max() <= 65535, side
        np.testing.assert_allclose(decode_xy(q.astype(np.uint16), e), edge,
                                   atol=2.0 ** (e - 1) + 1e-6)


def test_wgc_codes_of_stored_angles_equal_wgc_codes_of_the_angles():
    """The stored 16-bit orientation's top byte is HE+WGC's 8-bit code, bit for bit, at
    and around every one of its 256 boundaries."""
    from irbench.methods.sift.keypoints import (
        angle_codes,
        stored_angle_codes,
        wgc_angle_codes,
    )

    edges = np.arange(257) * (2 * np.pi / 256)
    near = np.concatenate([np.nextafter(edges.astype(np.float32), -np.inf), edges,
                           np.nextafter(edges.astype(np.float32), np.inf)])
    angles = np.concatenate([near, np.random.default_rng(0).uniform(0, 2 * np.pi, 100000)]
                            ).astype(np.float32)
    angles = angles[angles >= 0]
    np.testing.assert_array_equal(wgc_angle_codes(stored_angle_codes(angles)),
                                  angle_codes(angles))
