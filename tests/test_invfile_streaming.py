"""Streaming index builds (two passes, counting sort, memory-mapped output) give exactly
the files, scores and rankings of the global-sort build they replace."""

from __future__ import annotations

import numpy as np
import pytest

from irbench.core.arrays import ConcatRows
from irbench.core.cache import Cache, _memmap_of
from irbench.methods.base import RunContext
from irbench.methods.sift.hamming import HammingIndex, HeWgcMethod, ScanSettings
from irbench.methods.sift.invfile import (
    InvertedFile,
    TfIdfIndex,
    build_steps,
    image_blocks,
)

N_WORDS = 50


reference_hamming = HammingIndex.build_reference
reference_tfidf = TfIdfIndex.build_reference


def database(seed: int = 0, n: int = 60):
    """Images of 0 to 30 features (some empty, the last one too), words of a skewed
    vocabulary in which some words never occur, repeated words within an image."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 31, n)
    counts[::7] = 0
    counts[-1] = 0
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    f = int(offsets[-1])
    words = (rng.zipf(1.6, f) % (N_WORDS - 5)).astype(np.uint32)  # words 45..49 unused
    signatures = rng.integers(0, 2**63, f, dtype=np.int64).astype(np.uint64)
    angles = rng.integers(0, 256, f).astype(np.uint8)
    scales = rng.integers(0, 256, f).astype(np.uint8)
    return words, offsets, signatures, angles, scales


def queries(seed: int = 1, nq: int = 6):
    words, offsets, sig, ang, sca = database(seed, nq)
    offsets[1:] += np.arange(1, nq + 1) * 3  # every query has features
    extra = np.random.default_rng(seed).integers(0, N_WORDS, int(offsets[-1]))
    words = np.concatenate([words, extra[: int(offsets[-1]) - len(words)]]).astype(np.uint32)
    rng = np.random.default_rng(seed + 1)
    f = len(words)
    sig = rng.integers(0, 2**63, f, dtype=np.int64).astype(np.uint64)
    ang = rng.integers(0, 256, f).astype(np.uint8)
    sca = rng.integers(0, 256, f).astype(np.uint8)
    per_query = [(words[a:b], sig[a:b], ang[a:b], sca[a:b])
                 for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    return words, offsets, per_query


SETTINGS = [ScanSettings(hamming_threshold=64, wgc=False), ScanSettings(hamming_threshold=30),
            ScanSettings(hamming_threshold=32, burstiness=True, hamming_weighting="gaussian")]


def assert_same_file(a: InvertedFile, b: InvertedFile) -> None:
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.image_ids, b.image_ids)
    assert a.image_ids.dtype == b.image_ids.dtype == np.uint32
    assert set(a.columns) == set(b.columns) and a.n_images == b.n_images
    for name in a.columns:
        assert a.columns[name].dtype == b.columns[name].dtype
        np.testing.assert_array_equal(a.columns[name], b.columns[name])


def test_image_blocks_cover_every_image_and_cut_at_images():
    offsets = np.array([0, 0, 3, 3, 10, 11, 11], np.int64)
    assert image_blocks(offsets, 1) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 6)]
    assert image_blocks(offsets, 4) == [(0, 3), (3, 4), (4, 6)]
    assert image_blocks(offsets, 100) == [(0, 6)]
    assert image_blocks(np.zeros(1, np.int64), 5) == []
    assert image_blocks(np.zeros(4, np.int64), 5) == [(0, 3)]


@pytest.mark.parametrize("block_features", [1, 2, 17, 100, 1 << 20])
def test_streaming_hamming_build_equals_the_global_sort(block_features):
    words, offsets, sig, ang, sca = database()
    ref = reference_hamming(words, offsets, N_WORDS, sig, ang, sca)
    got = HammingIndex.build(words, offsets, N_WORDS, sig, ang, sca,
                             block_features=block_features)
    assert_same_file(got.invfile, ref.invfile)
    np.testing.assert_array_equal(got.idf, ref.idf)
    np.testing.assert_array_equal(got.norms, ref.norms)
    _, _, per_query = queries()
    for s in SETTINGS:
        r_ref, t_ref, m_ref = ref.search(per_query, 20, s)
        r_got, t_got, m_got = got.search(per_query, 20, s)
        assert (t_ref > 0).sum() > 20  # the comparison is not between empty rankings
        np.testing.assert_array_equal(r_got, r_ref)
        np.testing.assert_array_equal(t_got, t_ref)
        assert m_got == m_ref


@pytest.mark.parametrize("block_features", [1, 3, 40, 1 << 20])
def test_streaming_tfidf_build_equals_the_global_sort(block_features):
    words, offsets, *_ = database(seed=3)
    ref = reference_tfidf(words, offsets, N_WORDS)
    got = TfIdfIndex.build(words, offsets, N_WORDS, block_features=block_features)
    assert_same_file(got.invfile, ref.invfile)
    np.testing.assert_array_equal(got.idf, ref.idf)
    qwords, qoffsets, _ = queries()
    for a, b in ((got.search(qwords, qoffsets, 25), ref.search(qwords, qoffsets, 25)),
                 (got.search(qwords, qoffsets, 25, block_elements=1),
                  ref.search(qwords, qoffsets, 25, block_elements=1))):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(got.scores(qwords, qoffsets), ref.scores(qwords, qoffsets))


@pytest.mark.parametrize("block_features", [1, 17, 1 << 20])
def test_streaming_builds_move_their_bar_per_block_to_its_total(block_features):
    """Each pass moves the bar by the images of every block once the block is done, so the
    bar reaches `build_steps` (empty images and an empty database included)."""
    words, offsets, sig, ang, sca = database()
    blocks = [end - begin for begin, end in image_blocks(offsets, block_features)]
    for build in (HammingIndex.build, TfIdfIndex.build):
        steps = []
        columns = (sig, ang, sca) if build == HammingIndex.build else ()
        build(words, offsets, N_WORDS, *columns, block_features=block_features,
              progress=steps.append)
        assert steps == blocks * 2
        assert sum(steps) == build_steps(len(offsets) - 1) == 2 * 60
    empty = np.zeros(0, np.uint32)
    for n_images in (0, 3):
        steps = []
        TfIdfIndex.build(empty, np.zeros(n_images + 1, np.int64), 5, progress=steps.append)
        assert sum(steps) == build_steps(n_images)


def _mapped(tmp_path, name, array):
    np.save(tmp_path / f"{name}.npy", array)
    return np.load(tmp_path / f"{name}.npy", mmap_mode="r")


def test_build_from_mapped_inputs_into_a_folder(tmp_path):
    """Memory-mapped (and segmented) inputs, memory-mapped outputs: the same index."""
    words, offsets, sig, ang, sca = database(seed=5)
    ref = reference_hamming(words, offsets, N_WORDS, sig, ang, sca)
    half = int(offsets[30])
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    mapped_words = ConcatRows([_mapped(inputs, "w0", words[:half]),
                               _mapped(inputs, "w1", words[half:])])
    out = tmp_path / "index"
    out.mkdir()
    got = HammingIndex.build(mapped_words, offsets, N_WORDS, _mapped(inputs, "sig", sig),
                             _mapped(inputs, "ang", ang), _mapped(inputs, "sca", sca),
                             folder=out, block_features=64)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{name}.npy" for name in got.arrays())
    for name, array in got.arrays().items():
        assert _memmap_of(array) is not None, name
    assert_same_file(got.invfile, ref.invfile)
    reread = HammingIndex.from_arrays(
        {name: np.load(out / f"{name}.npy", mmap_mode="r") for name in got.arrays()})
    assert_same_file(reread.invfile, ref.invfile)
    np.testing.assert_array_equal(reread.norms, ref.norms)
    _, _, per_query = queries()
    for s in SETTINGS:
        np.testing.assert_array_equal(reread.search(per_query, 10, s)[0],
                                      ref.search(per_query, 10, s)[0])
        np.testing.assert_array_equal(reread.search(per_query, 10, s)[1],
                                      ref.search(per_query, 10, s)[1])
    bow_out = tmp_path / "bow"
    bow_out.mkdir()
    bow = TfIdfIndex.build(mapped_words, offsets, N_WORDS, folder=bow_out, block_features=5)
    assert_same_file(bow.invfile, reference_tfidf(words, offsets, N_WORDS).invfile)


def test_empty_database_and_empty_folder_arrays(tmp_path):
    offsets = np.zeros(4, np.int64)
    empty = np.zeros(0, np.uint32)
    index = HammingIndex.build(empty, offsets, 5, empty.astype(np.uint64),
                               empty.astype(np.uint8), empty.astype(np.uint8), folder=tmp_path)
    assert index.invfile.n_postings == 0 and index.n_images == 3
    np.testing.assert_array_equal(index.norms, 0)
    q = (np.array([1], np.int64), np.zeros(1, np.uint64), np.zeros(1, np.uint8),
         np.zeros(1, np.uint8))
    ranks, scores, scanned = index.search([q], 2, ScanSettings())
    assert scanned == 0 and not scores.any()
    bow = TfIdfIndex.build(empty, offsets, 5)
    assert bow.invfile.n_postings == 0


def test_bad_inputs_are_refused():
    words, offsets, sig, ang, sca = database()
    with pytest.raises(ValueError, match="word ids"):
        TfIdfIndex.build(words, offsets, 10)
    with pytest.raises(ValueError, match="signatures has"):
        HammingIndex.build(words, offsets, N_WORDS, sig[:-1], ang, sca)
    with pytest.raises(ValueError, match="offsets"):
        TfIdfIndex.build(words, offsets[::-1], N_WORDS)
    lengths = np.bincount(words, minlength=N_WORDS)
    blocks = [(words.astype(np.int64), np.repeat(np.arange(len(offsets) - 1),
                                                 np.diff(offsets)), {})]
    with pytest.raises(ValueError, match="fewer postings"):
        InvertedFile.from_blocks(lengths + 1, blocks, len(offsets) - 1, {})
    with pytest.raises(ValueError, match="more postings"):
        InvertedFile.from_blocks(np.maximum(lengths - 1, 0), blocks, len(offsets) - 1, {})
    with pytest.raises(ValueError, match="image order"):
        InvertedFile.from_blocks(lengths, [(b[0], b[1][::-1], {}) for b in blocks],
                                 len(offsets) - 1, {})
    with pytest.raises(ValueError, match="taken"):
        InvertedFile.from_blocks(lengths, blocks, len(offsets) - 1, {"indptr": np.int64})


def test_load_or_write_stores_files_in_place_and_maps_them(tmp_path):
    cache = Cache(tmp_path / "cache")
    calls = []

    def write(folder):
        calls.append(folder)
        big = np.lib.format.open_memmap(folder / "big.npy", mode="w+", dtype=np.uint64,
                                        shape=(1000,))
        big[:] = np.arange(1000, dtype=np.uint64)
        return {"big": big, "small": np.arange(3), "n": 7}

    a = cache.load_or_write("kind", {"k": 1}, write)
    b = cache.load_or_write("kind", {"k": 1}, write)
    assert len(calls) == 1 and [e.hit for e in cache.events] == [False, True]
    for art in (a, b):
        assert art["n"] == 7 and art.id == a.id
        assert _memmap_of(art["big"]) is not None and not art["big"].flags.writeable
        np.testing.assert_array_equal(art["big"], np.arange(1000))
        np.testing.assert_array_equal(art["small"], np.arange(3))
    path = cache.path_for("kind", a.id)
    assert not any(p.name.endswith(".tmp") for p in path.parent.iterdir())
    # the cache disabled: the computation keeps its arrays in memory
    off = Cache(tmp_path / "off", enabled=False)
    got = off.load_or_write("kind", {"k": 1}, lambda folder: {"x": np.ones(2), "f": folder})
    assert got["f"] is None and not (tmp_path / "off").exists()


def test_load_or_write_refuses_files_it_was_not_given_back(tmp_path):
    cache = Cache(tmp_path)

    def stray(folder):
        np.save(folder / "left.npy", np.ones(2))
        return {"x": np.ones(2)}

    def copied(folder):
        x = np.lib.format.open_memmap(folder / "x.npy", mode="w+", dtype=np.int64, shape=(2,))
        return {"x": np.array(x)}

    with pytest.raises(ValueError, match="not returned"):
        cache.load_or_write("kind", {"k": 1}, stray)
    with pytest.raises(ValueError, match="not the one written"):
        cache.load_or_write("kind", {"k": 2}, copied)
    assert not any((tmp_path / "artifacts" / "kind").rglob("meta.json"))


@pytest.mark.slow
def test_he_wgc_index_is_cached_memory_mapped_and_ranks_as_in_memory(tmp_path):
    from irbench.datasets import load

    ds = load("demo", objects=4, database_views=3, distractors=4, query_views=1, seed=0)
    expected = None
    for context in (RunContext.in_memory(dataset_id="demo@test"),
                    RunContext(cache=Cache(tmp_path / "cache"), workers=1),
                    RunContext(cache=Cache(tmp_path / "cache"), workers=1)):
        method = HeWgcMethod(context=context)
        method.fit(ds.train)
        method.index(ds.database)
        got = method.query(ds.queries, len(ds.database))
        if expected is None:
            expected = got
            continue
        assert _memmap_of(method._index.invfile.columns["signature"]) is not None
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])
    hits = [e.hit for e in context.cache.events if e.kind == "hamming-index"]
    assert hits == [True]


def test_release_rows_keeps_the_data_of_a_mapped_file(tmp_path):
    from irbench.core.cache import release_rows

    out = np.lib.format.open_memmap(tmp_path / "a.npy", mode="w+", dtype=np.uint64,
                                    shape=(5000,))
    out[:] = np.arange(5000, dtype=np.uint64)
    release_rows(out, 10, 3000)
    release_rows(out[100:], 5, 4000)  # a view: rows counted from the view's first
    release_rows(out, 4990, 5000)
    release_rows(np.arange(3), 0, 2)  # not mapped: nothing to do
    np.testing.assert_array_equal(out, np.arange(5000))
    out.flush()
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy", mmap_mode="r"), np.arange(5000))
