import numpy as np
import pytest

from irbench.core.cache import Cache, read_artifact


def test_load_or_compute_reuses(tmp_path):
    cache = Cache(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return {"x": np.arange(5), "n": 5}

    a = cache.load_or_compute("kind", {"k": 1}, compute)
    b = cache.load_or_compute("kind", {"k": 1}, compute)
    assert len(calls) == 1 and b["n"] == 5 and np.array_equal(a["x"], b["x"])
    assert [e.hit for e in cache.events] == [False, True]
    cache.load_or_compute("kind", {"k": 2}, compute)
    assert len(calls) == 2
    Cache(tmp_path, overwrite=True).load_or_compute("kind", {"k": 1}, compute)
    assert len(calls) == 3


def test_half_written_artifact_is_not_trusted(tmp_path):
    cache = Cache(tmp_path)
    cache.load_or_compute("kind", {"k": 1}, lambda: {"x": np.ones(3)})
    path = cache.path_for("kind", cache.key_of("kind", {"k": 1}))
    (path / "meta.json").unlink()  # as if interrupted before the completion marker
    out = cache.load_or_compute("kind", {"k": 1}, lambda: {"x": np.zeros(3)})
    assert out["x"].sum() == 0


def test_map_cached_resumes_after_interruption(tmp_path):
    items = list(range(10))
    done = []

    def compute(chunk, fail_at=None):
        out = []
        for i in chunk:
            if i == fail_at:
                raise KeyboardInterrupt
            done.append(i)
            out.append({"v": np.full((i % 3, 2), i, np.float32)})
        return out

    with pytest.raises(KeyboardInterrupt):
        Cache(tmp_path).map_cached("m", {"k": 1}, items, lambda c: compute(c, fail_at=7),
                                   shard_size=3)
    assert done == [0, 1, 2, 3, 4, 5, 6]
    done.clear()
    out = Cache(tmp_path).map_cached("m", {"k": 1}, items, compute, shard_size=3)
    assert done == [6, 7, 8, 9]  # shards [0,3) and [3,6) were reused
    counts = np.diff(out["offsets"])
    assert counts.tolist() == [i % 3 for i in items]
    assert out["v"][out["offsets"][4]:out["offsets"][5]].tolist() == [[4, 4]]
    again = Cache(tmp_path)
    again.map_cached("m", {"k": 1}, items, compute, shard_size=3)
    assert again.events[-1].hit


def test_disabled_cache_writes_nothing(tmp_path):
    cache = Cache(tmp_path / "c", enabled=False)
    cache.load_or_compute("kind", {}, lambda: {"x": np.ones(2)})
    cache.map_cached("m", {}, [1, 2], lambda c: [{"v": np.ones(1)} for _ in c])
    assert not (tmp_path / "c").exists()


def _slow(seconds, value):
    def compute():
        import time

        time.sleep(seconds)
        return {"x": np.full(3, value)}
    return compute


def test_a_reused_artifact_reports_the_time_it_took_to_compute(tmp_path):
    Cache(tmp_path).load_or_compute("kind", {"k": 1}, _slow(0.2, 1))
    later = Cache(tmp_path)
    art = later.load_or_compute("kind", {"k": 1}, _slow(0.2, 2))
    assert art["x"][0] == 1 and art.compute_seconds >= 0.2
    event = later.events[0]
    assert event.hit and event.compute_seconds == art.compute_seconds
    assert event.to_dict()["compute_seconds"] >= 0.2
    # a stage that only reused it costs what computing it did, not what loading did
    assert later.cost_since(0, event.seconds) == pytest.approx(art.compute_seconds)


def test_computing_time_counts_what_a_computation_reused(tmp_path):
    cache = Cache(tmp_path)
    cache.load_or_compute("inner", {"k": 1}, _slow(0.3, 1))
    later = Cache(tmp_path)

    def outer():
        inner = later.load_or_compute("inner", {"k": 1}, _slow(0.3, 9))
        return {"y": inner["x"] * 2}

    out = later.load_or_compute("outer", {"k": 1}, outer)
    assert out["y"][0] == 2 and out.compute_seconds >= 0.3  # inner counted at 0.3 s


def test_computing_time_is_unknown_when_a_reused_part_has_none(tmp_path):
    from irbench.core.cache import write_artifact

    cache = Cache(tmp_path)
    key_hash = cache.key_of("old", {"k": 1})
    write_artifact(cache.path_for("old", key_hash), {"x": np.ones(2)}, key_hash,
                   {"kind": "old"})  # as stored before computing times were recorded
    art = cache.load_or_compute("old", {"k": 1}, _slow(0, 0))
    assert art["x"][0] == 1 and art.compute_seconds is None
    assert cache.cost_since(0, 1.0) is None


def test_map_cached_sums_the_computing_time_of_resumed_shards(tmp_path):
    import time

    def compute(chunk):
        time.sleep(0.1)
        return [{"v": np.asarray([i])} for i in chunk]

    cache = Cache(tmp_path)
    art = cache.map_cached("kind", {"k": 1}, list(range(6)), compute, shard_size=2)
    assert art.compute_seconds >= 0.3  # three shards of 0.1 s
    again = Cache(tmp_path).map_cached("kind", {"k": 1}, list(range(6)), compute,
                                       shard_size=2)
    assert again.compute_seconds == pytest.approx(art.compute_seconds, abs=1e-3)


def test_map_cached_moves_the_bar_once_per_shard(tmp_path):
    import contextlib

    class Recorder:
        def __init__(self):
            self.steps = []

        @contextlib.contextmanager
        def task(self, description, total=None):
            yield lambda n=1, status=None: self.steps.append(n)

    bar = Recorder()
    art = Cache(tmp_path).map_cached("kind", {"k": 1}, list(range(50)),
                                     lambda chunk: [{"v": np.asarray([i * 2])} for i in chunk],
                                     shard_size=20, progress=bar)
    assert bar.steps == [20, 20, 10] and art["v"].tolist() == [i * 2 for i in range(50)]


def test_a_stage_reusing_an_artifact_and_one_computed_from_it_counts_it_once(tmp_path):
    """SIFT words are computed from SIFT features; a later query stage reuses both. Its
    cost counts the features' computing time once (before, twice: once as the features,
    once inside the words' time), and so does a third artifact built on both, per-item
    (`map_cached`) or not."""
    import time

    first_run = Cache(tmp_path)
    first_run.load_or_compute("features", {"k": 1}, _slow(0.4, 1))

    def words():
        feats = first_run.load_or_compute("features", {"k": 1}, pytest.fail)
        time.sleep(0.1)
        return {"w": feats["x"] + 1}

    first_run.load_or_compute("words", {"k": 1}, words)

    def signatures(chunk):
        later_words = first_run.load_or_compute("words", {"k": 1}, pytest.fail)
        time.sleep(0.05)
        return [{"s": later_words["w"][:1] * i} for i in chunk]

    first_run.map_cached("signatures", {"k": 1}, [1, 2], signatures, shard_size=1)
    feats_s, words_s, sig_s = (e.compute_seconds for e in first_run.events
                               if not e.hit)  # (F, F + W, F + W + S): each includes inputs
    assert feats_s >= 0.4 and words_s >= feats_s + 0.1 and sig_s >= words_s + 0.1

    later = Cache(tmp_path)  # the query stage of a later run reuses all three
    for kind in ("features", "words", "signatures"):
        later.load_or_compute(kind, {"k": 1}, pytest.fail) if kind != "signatures" else \
            later.map_cached(kind, {"k": 1}, [1, 2], pytest.fail, shard_size=1)
    loads = sum(e.seconds for e in later.events)
    assert all(e.hit for e in later.events)
    assert later.cost_since(0, loads) == pytest.approx(sig_s, abs=1e-3)  # F + W + S once
    parts = later.events[2].parts
    assert set(parts) == {e.key for e in later.events}
    assert sum(parts.values()) == pytest.approx(sig_s, abs=1e-3)
    lone = Cache(tmp_path)  # words alone: F + W
    lone.load_or_compute("words", {"k": 1}, pytest.fail)
    assert lone.cost_since(0, lone.events[0].seconds) == pytest.approx(words_s, abs=1e-3)


def test_map_cached_counts_what_taking_its_items_computed(tmp_path):
    """Items that compute what they are read from when taken (SIFT words take the SIFT
    features lazily): that time counts in the per-item artifact's computing time, and
    its own time is kept apart from it (before, its own time came out as 0)."""
    import time

    cache = Cache(tmp_path)

    class Lazy:
        def __len__(self):
            return 4

        def __getitem__(self, index):
            cache.load_or_compute("features", {"k": 1}, _slow(0.3, 1))
            return list(range(4))[index]

    def words(chunk):
        time.sleep(0.1)
        return [{"w": np.asarray([i])} for i in chunk]

    art = cache.map_cached("words", {"k": 1}, Lazy(), words, shard_size=4)
    features = cache.events[0]
    assert not features.hit and features.compute_seconds >= 0.3
    assert art.cost_parts[features.key] == pytest.approx(features.compute_seconds, abs=1e-3)
    assert art.cost_parts[art.id] >= 0.1
    assert art.compute_seconds >= features.compute_seconds + 0.1


def test_an_artifact_computed_then_reused_in_one_run_is_paid_for_once(tmp_path):
    cache = Cache(tmp_path)
    cache.load_or_compute("features", {"k": 1}, _slow(0.3, 1))  # computed in this run
    first = len(cache.events)
    cache.load_or_compute("features", {"k": 1}, _slow(0.3, 2))  # reused later in it
    assert cache.events[-1].hit
    assert cache.cost_since(first, 0.01) == pytest.approx(0.01)  # not 0.3 more
    later = Cache(tmp_path)  # another run: the first reuse counts, a second does not
    later.load_or_compute("features", {"k": 1}, _slow(0.3, 3))
    later.load_or_compute("features", {"k": 1}, _slow(0.3, 3))
    assert later.cost_since(0, 0.01) == pytest.approx(0.01 + later.events[0].compute_seconds
                                                      - later.events[0].seconds)


# -- out-of-core artifacts ---------------------------------------------------------------


def test_reused_arrays_are_memory_mapped_and_read_only(tmp_path):
    cache = Cache(tmp_path)
    cache.load_or_compute("kind", {"k": 1}, lambda: {"x": np.arange(6.0).reshape(3, 2),
                                                     "empty": np.zeros((0, 4), np.uint8)})
    out = Cache(tmp_path).load_or_compute("kind", {"k": 1}, lambda: pytest.fail("recomputed"))
    assert isinstance(out["x"], np.memmap) and not out["x"].flags.writeable
    assert out["x"].tolist() == [[0, 1], [2, 3], [4, 5]] and out["empty"].shape == (0, 4)
    with pytest.raises(ValueError, match="read-only"):
        out["x"][0, 0] = 7


def test_artifacts_of_the_npz_layout_are_still_read(tmp_path):
    """Caches written before the .npy layout stay valid: same keys, same values."""
    import json

    from irbench.core.cache import FORMAT_VERSION, _meta_checksum, array_checksum

    cache = Cache(tmp_path)
    key_hash = cache.key_of("kind", {"k": 1})
    path = cache.path_for("kind", key_hash)
    path.mkdir(parents=True)
    x = np.arange(4, dtype=np.int64)
    np.savez(path / "arrays.npz", x=x)
    (path / "meta.json").write_text(json.dumps({
        "format": FORMAT_VERSION, "id": key_hash, "key": {}, "meta": {"n": 4},
        "meta_sha256": _meta_checksum({"n": 4}), "arrays": {"x": array_checksum(x)},
        "compute_seconds": 1.5}))
    out = cache.load_or_compute("kind", {"k": 1}, lambda: pytest.fail("recomputed"))
    assert out["x"].tolist() == [0, 1, 2, 3] and out["n"] == 4
    assert out.compute_seconds == 1.5


def test_array_names_are_escaped_into_file_names(tmp_path):
    arrays = {"../x": np.ones(2), "w/mean": np.zeros(3), ".": np.arange(2)}
    Cache(tmp_path).load_or_compute("kind", {"k": 1}, lambda: arrays)
    out = Cache(tmp_path).load_or_compute("kind", {"k": 1}, lambda: pytest.fail("recomputed"))
    assert {k: v.tolist() for k, v in out.items()} == {k: v.tolist() for k, v in arrays.items()}
    assert not (tmp_path / "x.npy").exists() and not list(tmp_path.rglob("mean.npy"))
    with pytest.raises(ValueError, match="cannot be a file name"):
        Cache(tmp_path).load_or_compute("kind", {"k": 2}, lambda: {"x" * 201: np.ones(2)})


def test_map_cached_merges_one_shard_at_a_time(tmp_path, monkeypatch):
    """The concatenation equals the in-memory one, and merging 16 shards of 1 MiB each
    never holds more than about one shard (traced numpy allocations; files are read and
    copied in blocks of 256 KiB here)."""
    import tracemalloc

    monkeypatch.setattr("irbench.core.cache._HASH_BLOCK", 1 << 18)

    rows = 1 << 14  # 16,384 rows of 64 bytes per shard: 1 MiB

    def compute(chunk):
        return [{"v": np.full((rows if i % 5 else 0, 16), i, np.float32),
                 "w": np.full(rows if i % 5 else 0, i, np.uint32)} for i in chunk]

    items = list(range(16))
    in_memory = Cache(tmp_path, enabled=False).map_cached("m", {"k": 1}, items, compute,
                                                          shard_size=1)
    def interrupted(chunk):
        if chunk[0] == items[-1]:
            raise KeyboardInterrupt
        return compute(chunk)

    with pytest.raises(KeyboardInterrupt):  # every shard but the last is written
        Cache(tmp_path).map_cached("m", {"k": 1}, items, interrupted, shard_size=1)
    tracemalloc.start()
    try:
        merged = Cache(tmp_path).map_cached("m", {"k": 1}, items, compute, shard_size=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    for name in ("offsets", "v", "w"):
        assert np.array_equal(merged[name], in_memory[name]), name
    total = merged["v"].nbytes + merged["w"].nbytes
    assert total > 12 << 20 and peak < 3 << 20, (total, peak)


def test_iter_blocks_walks_a_mapped_array_in_copies(tmp_path):
    from irbench.core.cache import iter_blocks

    np.save(tmp_path / "a.npy", np.arange(1000, dtype=np.int64).reshape(250, 4))
    mapped = np.load(tmp_path / "a.npy", mmap_mode="r")
    blocks = list(iter_blocks(mapped, 64))
    assert [len(b) for b in blocks] == [64, 64, 64, 58]
    assert all(b.flags.writeable and not isinstance(b, np.memmap) for b in blocks)
    assert np.array_equal(np.concatenate(blocks), mapped)


def test_a_computation_with_progress_moves_the_bar_per_item(tmp_path):
    """`WithProgress`: the computation moves the bar as items finish; the shard's rest is
    counted after it (here one item never reported), and results are unchanged."""
    import contextlib

    from irbench.core.cache import WithProgress

    steps = []

    class Recorder:
        @contextlib.contextmanager
        def task(self, description, total=None):
            yield lambda n=1, status=None: steps.append(n)

    def compute(chunk, advance):
        out = []
        for i in chunk:
            out.append({"v": np.asarray([i * 2])})
            if i % 10 != 9:
                advance(1)
        return out

    art = Cache(tmp_path / "a").map_cached("kind", {"k": 1}, list(range(25)),
                                           WithProgress(compute), shard_size=10,
                                           progress=Recorder())
    assert steps == [1] * 25
    plain = Cache(tmp_path / "b").map_cached("kind", {"k": 1}, list(range(25)),
                                             lambda c: compute(c, lambda n=1: None),
                                             shard_size=10)
    assert np.array_equal(art["v"], plain["v"]) and sum(steps) == 25
    assert WithProgress(compute)([3])[0]["v"].tolist() == [6]  # callable without a bar


def test_a_verified_artifact_is_not_read_again_until_its_files_change(tmp_path, monkeypatch):
    """The first load reads every array to verify its checksum; later loads of unchanged
    files only stat them; a file written to since is read, and its damage found."""
    from irbench.core import cache as cache_module

    reads = []
    real = cache_module._npy_checksum
    monkeypatch.setattr(cache_module, "_npy_checksum", lambda f: reads.append(f) or real(f))
    cache = Cache(tmp_path)
    cache.load_or_compute("kind", {"k": 1}, lambda: {"a": np.arange(10), "b": np.ones(3)})
    first = Cache(tmp_path).load_or_compute("kind", {"k": 1}, lambda: pytest.fail("computed"))
    assert len(reads) == 2 and first["a"].tolist() == list(range(10))
    Cache(tmp_path).load_or_compute("kind", {"k": 1}, lambda: pytest.fail("computed"))
    assert len(reads) == 2  # stat only
    file = next(tmp_path.rglob("a.npy"))
    data = bytearray(file.read_bytes())
    data[-1] ^= 0xFF
    file.write_bytes(bytes(data))
    again = Cache(tmp_path).load_or_compute("kind", {"k": 1}, lambda: {"a": np.arange(10),
                                                                       "b": np.ones(3)})
    assert len(reads) == 3 and again["a"].tolist() == list(range(10))  # found, recomputed


def test_map_cached_uses_the_result_of_a_process_that_finished_first(tmp_path):
    """Two processes compute one per-item artifact: the one that finishes first writes it
    and deletes the shards; the other, finding the shards it meant to copy gone, uses
    the stored artifact instead of failing (two people sharing a cache)."""
    items = list(range(4))

    def plain(chunk):
        return [{"x": np.full(2, i)} for i in chunk]

    def racing(chunk):
        if chunk[0] == 2:  # meanwhile, another process completes the artifact
            Cache(tmp_path).map_cached("kind", {"k": 1}, items, plain, shard_size=2)
        return plain(chunk)

    cache = Cache(tmp_path)
    out = cache.map_cached("kind", {"k": 1}, items, racing, shard_size=2)
    assert np.asarray(out["x"]).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert cache.events[-1].hit  # the other process's artifact
    assert not list(tmp_path.rglob("*.shards"))


def test_an_artifact_another_process_stored_first_is_kept_not_replaced(tmp_path):
    """Two writers of one key: the second keeps the first's folder (a reader that found
    it, such as a run concatenating that shard, never sees it vanish and come back);
    `replace` (the user's --overwrite) and a damaged first copy are replaced."""
    from irbench.core.cache import write_artifact

    path, key_hash = tmp_path / "a", "k" * 64
    write_artifact(path, {"x": np.arange(3)}, key_hash, {"kind": "t"})
    first = path.stat().st_ino
    write_artifact(path, {"x": np.arange(3)}, key_hash, {"kind": "t"})
    assert path.stat().st_ino == first
    assert not [p for p in tmp_path.iterdir() if p.name != "a"]  # no staging left
    write_artifact(path, {"x": np.arange(3)}, key_hash, {"kind": "t"}, replace=True)
    assert path.stat().st_ino != first
    replaced = path.stat().st_ino
    file = next(path.rglob("x.npy"))
    file.write_bytes(file.read_bytes()[:-1])  # damaged
    write_artifact(path, {"x": np.arange(3)}, key_hash, {"kind": "t"})
    assert path.stat().st_ino != replaced and read_artifact(path, key_hash) is not None


def test_load_or_compute_goes_on_with_the_copy_another_process_stored_first(tmp_path):
    """Two runs compute one artifact; the other stores it first. This run goes on with
    the stored copy, not its own (the two can differ where computing is not
    bit-reproducible), so what it computes next matches what the cache holds."""
    from irbench.core.cache import write_artifact

    cache = Cache(tmp_path)
    key_hash = cache.key_of("kind", {"k": 1})

    def racing():
        write_artifact(cache.path_for("kind", key_hash), {"x": np.asarray([1.0, 2.0])},
                       key_hash, {"kind": "kind"}, 5.0)  # the other run, done first
        return {"x": np.asarray([1.0, 2.0000001])}

    out = cache.load_or_compute("kind", {"k": 1}, racing)
    assert out["x"].tolist() == [1.0, 2.0] and out.compute_seconds == 5.0
    assert Cache(tmp_path).load_or_compute("kind", {"k": 1}, pytest.fail)["x"][1] == 2.0


def test_map_cached_keeps_the_shard_another_process_stored_while_it_computed(tmp_path):
    """Both runs compute shard 0 of one artifact; the other stores it first. This run
    keeps that shard in place (before, it replaced the folder, and the other run, reading
    the shard again to concatenate it, found it missing and failed)."""
    from irbench.core.cache import stable_hash, write_artifact

    items = list(range(4))
    cache = Cache(tmp_path)
    key_hash = cache.key_of("kind", {"k": 1})
    shard = cache.path_for("kind", key_hash).parent / f"{key_hash}.shards" / \
        "000000000-000000002"
    seen = []

    def racing(chunk):
        if chunk[0] == 0:  # the other process stores shard 0 while this one computes it
            write_artifact(shard, {"x": np.asarray([0, 0, 1, 1]),
                                   "offsets": np.asarray([0, 2, 4])},
                           stable_hash({"of": key_hash, "shard": [0, 2]}), {"kind": "kind"})
            seen.append(shard.stat().st_ino)
        else:
            seen.append(shard.stat().st_ino)  # shard 0 is stored: still the other's
        return [{"x": np.full(2, i)} for i in chunk]

    out = cache.map_cached("kind", {"k": 1}, items, racing, shard_size=2)
    assert np.asarray(out["x"]).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert len(seen) == 2 and seen[0] == seen[1]


def test_an_entry_changing_while_read_is_not_deleted_as_damaged(tmp_path, monkeypatch):
    """A file of a cache entry that goes away while it is verified (another process
    replacing or deleting the folder) makes the read find nothing; the folder is not
    deleted as damaged (which could delete the other process's fresh copy)."""
    import irbench.core.cache as cache_mod

    cache = Cache(tmp_path)
    cache.load_or_compute("kind", {"k": 1}, lambda: {"x": np.arange(3)})
    key_hash = cache.key_of("kind", {"k": 1})
    path = cache.path_for("kind", key_hash)

    def gone(file):
        raise FileNotFoundError(2, "No such file or directory", str(file))

    monkeypatch.setattr(cache_mod, "_map_npy", gone)
    assert read_artifact(path, key_hash) is None
    assert (path / "meta.json").is_file()
    monkeypatch.undo()
    assert read_artifact(path, key_hash)["x"].tolist() == [0, 1, 2]


def _race_compute(chunk):
    import random
    import time

    time.sleep(random.uniform(0, 0.02))
    return [{"x": np.full((2000, 16), i, np.float32)} for i in chunk]


def _race_worker(root, seed, results):
    import random

    random.seed(seed)
    try:
        out = Cache(root).map_cached("kind", {"k": 1}, list(range(40)), _race_compute,
                                     shard_size=8)
        results.put(np.asarray(out["x"])[::2000, 0].tolist() == list(range(40)))
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put(f"{type(exc).__name__}: {exc}")


def test_two_processes_computing_one_artifact_both_finish(tmp_path):
    """Two processes run one sharded `map_cached` at the same time, 30 times over: both
    always finish with the right arrays, and no shard or staging folder is left. (Before
    a shard stored first was kept and folders were removed by renaming them aside, 4 to
    11 of the 60 runs failed with FileNotFoundError in each of four tries of this test.)"""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    outcomes = []
    for race in range(30):
        results = ctx.Queue()
        procs = [ctx.Process(target=_race_worker, args=(tmp_path / str(race), 2 * race + j,
                                                         results)) for j in range(2)]
        for p in procs:
            p.start()
        outcomes += [results.get(timeout=120) for _ in procs]
        for p in procs:
            p.join()
    assert [o for o in outcomes if o is not True] == []
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith((".shards", ".tmp", ".old"))]
