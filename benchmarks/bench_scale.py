"""Benchmark: how the SIFT inverted files, a verifier and global search scale with the
database size, on synthetic features with planted true matches.

For each database size N (`--sizes`, default 10,000, 100,000 and 1,000,000 images) and
each method it prints the index bytes per image, the build seconds, the median query
latency, the peak resident memory (RSS) of the configuration, and the mAP of the planted
queries (and recall@100 against exact search for the approximate global indexes):

- `bow`: `TfIdfIndex` (tf-idf BoW, one posting per (word, image));
- `he-wgc`: `HammingIndex` (64-bit Hamming embedding, threshold 22, WGC; one posting per
  feature, 14 bytes);
- `cop` (`--verifier`): the verifier of a 1,000-image shortlist (`--shortlist`) of the
  bow first stage, with the database keypoint geometry (x, y, angle, scale float32);
  the query latency includes the first stage. COP is the default because it was the
  cheapest of the three verifiers per image pair (300 tentative matches: cop 5 ms,
  geometric-coding 9 ms, spatial-coding 56 ms on this machine);
- `exact-D`, `ivfpq-D`, `hnsw-D` for D = 512 and 4,096: global search over L2-normalized
  D-dimensional vectors (`irbench.core.search`): numpy exact search, IVF-PQ with a
  65,536-vector training sample and exact re-ranking of its top 1,000 (the raw vectors
  are read from the memory-mapped file), HNSW with 8-bit scalar-quantised storage;
- `he-wgc-mmap`: where full-density he-wgc does not fit, the HE+WGC index of N images at
  a lower density (`--mmap-features-per-image`, 200) is built, written as .npy files,
  and queried memory-mapped from a fresh process (the files' pages are dropped from the
  page cache first, so the first queries read the disk); its latency is extrapolated
  linearly to the full density (postings scanned per query grow with the features per
  database image), and so are its bytes.

Synthetic SIFT data (`--features-per-image`, 2,000): words of a 65,536-word vocabulary
(`--vocab`; real BoW vocabularies have 20k to 1M words) drawn with P(rank r) ~ (r + 50)^-0.8,
as `bench_invfile.py`; random 64-bit signatures; keypoints uniform in 1024 x 768 px,
uniform angles, sizes log-uniform in 2..64 px. Each of `--queries` queries has 2,000
features and 2 to 8 planted positives; a positive shares a log-uniform 0.5 % to 20 % of
its features with the query (same word, signature with Binomial(64, 1/16) flipped bits,
keypoints under one similarity transform per image, i.e. a consistent angle and
log-scale offset); every other feature is random. mAP is over these positives, top 1,000.
Global vectors: as `bench_search.py` (4,096 cluster centres, `--clusters`, 10 to 100
positives per query, a third of them hard), written block by block to a memory-mapped
.npy file.

recall@100 of these data at small N: the clusters' number does not grow with N, so a
cluster holds 2.4 vectors at N = 10,000, 24 at 100,000 and 244 at 1,000,000. A query's
exact top-100 is its planted positives (55 on average) and, after them, its centre's
cluster; where that cluster is smaller than the rest of the top-100, the rest are
mostly vectors of other clusters at about the similarity of the best of N random
directions (at N = 10,000: 0.18 on average against 0.13; the notes print both), i.e.
extremes of noise, which no cell of a coarse quantiser holds with the query. IVF finds
such a neighbour only when it lies in a cell it scans: at N = 10,000 ivfpq (default
nlist 256 cells of 39 vectors, nprobe 32: 13 % of the database scanned, and its 1,000
re-ranked candidates are nearly all of them) finds every planted positive and mAP
equals exact search's, but 55 % of the rest, so recall@100 is 0.75; the loss is the
coarse stage's alone (the share of the exact top-100 in the cells scanned is 0.75
too). At N = 1,000,000 the rest of the top-100 lies in the query's centre's cluster
(similarity 0.44 against 0.18 for noise) and ivfpq's recall@100 is 1.000. The notes
split recall@100 into the planted positives and the rest (with the rest's share of the
top-100 and mean similarity, against the random level); `--clusters 40` at N = 10,000
(250 vectors a cluster, as at 1M) gives recall 1.000 with the same defaults.

Every (method, N) runs in its own process, so its peak RSS (VmHWM, which counts the
memory-mapped input pages it touched) is its own; the data of each N are generated once,
in another process, as memory-mapped .npy files. A configuration whose estimated memory
(above the available memory, less a margin) or disk (above the free space of `--out-dir`)
or time (above `--budget-s`) is too large is printed as "not run" with the estimate.
Estimates come from the bytes per posting or vector and, once a method has run at a
smaller N, from its measured peak memory and seconds scaled linearly in N. Each run is
stopped after 3 x `--budget-s`. Latencies are medians over the queries (the machine is
shared). Then, per method, an extrapolation to 105k images (Oxford105k) and 1M (R1M)
from the largest measured size, labelled as extrapolated.

Goals (issue 14), on a 24 GiB, 2-core machine: he-wgc at 100,000 images of 2,000
features within 8 GB peak RSS; R1M global search within 8 GB with recall@100 >= 0.95;
a 1M-image HE+WGC index shown feasible on disk (memory-mapped), with its measured
query latency.

    python benchmarks/bench_scale.py [--sizes 10000,100000,1000000] [--budget-s 240]
        [--methods bow,he-wgc,cop,exact-512,ivfpq-512,hnsw-512,...] [--out-dir D --keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GLOBAL_KINDS = ("exact", "ivfpq", "hnsw")
DEFAULT_METHODS = ("bow,he-wgc,cop,he-wgc-mmap,exact-512,ivfpq-512,hnsw-512,"
                   "exact-4096,ivfpq-4096,hnsw-4096")
DEPTH = 1000
BLOCK = 4_000_000
"""Features (or vector floats / 128) generated and written per block."""
GiB = 2**30

# Priors of the estimates before a method has been measured: peak bytes of RAM and seconds
# per database feature (SIFT) or per vector float (global), and bytes written to disk.
PRIOR_RAM = {"bow": 70, "he-wgc": 90, "verifier": 120, "he-wgc-mmap": 90,
             "exact": 4.4, "ivfpq": 4.6, "hnsw": 8.0}
PRIOR_SECONDS = {"bow": 4e-7, "he-wgc": 6e-7, "verifier": 2e-6, "he-wgc-mmap": 7e-7,
                 "exact": 2e-9, "ivfpq": 1.5e-5, "hnsw": 1.2e-6}
DATA_DISK = {"sift": 30, "global": 4}
"""Bytes on disk per database feature (word 4, signature 8, angle and scale codes 2,
geometry 16) or per vector float."""
DATA_SECONDS = {"sift": 2.5e-7, "global": 1.5e-8}
INDEX_DISK = {"he-wgc-mmap": 14}


# -- synthetic data ---------------------------------------------------------------------


def zipf_words(rng: np.random.Generator, n: int, vocab: int, skew: float = 0.8) -> np.ndarray:
    """Word ids uint32[n] with P(rank r) ~ (r + 50)^-skew; frequent words spread over the
    id range by a fixed permutation."""
    p = (np.arange(vocab) + 50.0) ** -skew
    cdf = np.cumsum(p / p.sum())
    perm = np.random.default_rng(12345).permutation(vocab).astype(np.uint32)
    return perm[np.minimum(np.searchsorted(cdf, rng.random(n)), vocab - 1)]


def random_geometry(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {"x": rng.uniform(0, 1024, n).astype(np.float32),
            "y": rng.uniform(0, 768, n).astype(np.float32),
            "angle": rng.uniform(0, 2 * np.pi, n).astype(np.float32),
            "scale": np.exp2(rng.uniform(1, 6, n)).astype(np.float32)}


def write_sift(folder: Path, n: int, per_image: int, query_features: int, vocab: int,
               n_queries: int, seed: int) -> None:
    """Database and query features of `n` images with planted positives (module doc), as
    .npy files in `folder`, written a block at a time."""
    from irbench.methods.sift.hamming import angle_codes, scale_codes

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    f = n * per_image
    # the queries, and the planted features of their positives
    q_words = zipf_words(rng, n_queries * query_features, vocab)
    q_sig = rng.integers(0, 2**64, len(q_words), dtype=np.uint64)
    q_geo = random_geometry(rng, len(q_words))
    counts = rng.integers(2, 9, n_queries)
    images = rng.choice(n, int(counts.sum()), replace=False)
    owner = np.repeat(np.arange(n_queries), counts)
    target, source, transform = [], [], []
    for img, q in zip(images.tolist(), owner.tolist(), strict=True):
        share = int(round(per_image * np.exp(rng.uniform(np.log(0.005), np.log(0.2)))))
        share = max(1, min(share, per_image, query_features))
        target.append(img * per_image + rng.choice(per_image, share, replace=False))
        source.append(q * query_features + rng.choice(query_features, share, replace=False))
        theta, zoom = rng.uniform(0, 2 * np.pi), np.exp2(rng.uniform(-1, 1))
        transform.append(np.tile([theta, zoom, *rng.uniform(-200, 200, 2)], (share, 1)))
    target, source = np.concatenate(target), np.concatenate(source)
    transform = np.concatenate(transform)
    order = np.argsort(target)
    target, source, transform = target[order], source[order], transform[order]
    theta, zoom, tx, ty = transform.T
    qx, qy = q_geo["x"][source].astype(np.float64), q_geo["y"][source].astype(np.float64)
    planted = {
        "words": q_words[source],
        "signatures": q_sig[source] ^ _flips(rng, len(source), 1 / 16),
        "x": (zoom * (np.cos(theta) * qx - np.sin(theta) * qy) + tx).astype(np.float32),
        "y": (zoom * (np.sin(theta) * qx + np.cos(theta) * qy) + ty).astype(np.float32),
        "angle": np.mod(q_geo["angle"][source] + theta
                        + rng.normal(0, 0.05, len(source)), 2 * np.pi).astype(np.float32),
        "scale": (q_geo["scale"][source] * zoom
                  * np.exp(rng.normal(0, 0.05, len(source)))).astype(np.float32),
    }
    np.save(folder / "offsets.npy", np.arange(n + 1, dtype=np.int64) * per_image)
    dtypes = {"words": np.uint32, "signatures": np.uint64, "angles": np.uint8,
              "scales": np.uint8, "x": np.float32, "y": np.float32, "angle": np.float32,
              "scale": np.float32}
    out = {k: np.lib.format.open_memmap(folder / f"{k}.npy", "w+", dt, (f,))
           for k, dt in dtypes.items()}
    for begin in range(0, f, BLOCK):
        end = min(f, begin + BLOCK)
        block = {"words": zipf_words(rng, end - begin, vocab),
                 "signatures": rng.integers(0, 2**64, end - begin, dtype=np.uint64),
                 **random_geometry(rng, end - begin)}
        lo, hi = np.searchsorted(target, [begin, end])
        for k, v in planted.items():
            block[k][target[lo:hi] - begin] = v[lo:hi]
        block["angles"] = angle_codes(block["angle"])
        block["scales"] = scale_codes(block["scale"])
        for k, arr in out.items():
            arr[begin:end] = block[k]
    for arr in out.values():
        arr.flush()
    del out
    np.save(folder / "q_words.npy", q_words)
    np.save(folder / "q_signatures.npy", q_sig)
    for k, v in q_geo.items():
        np.save(folder / f"q_{k}.npy", v)
    np.save(folder / "q_angles.npy", angle_codes(q_geo["angle"]))
    np.save(folder / "q_scales.npy", scale_codes(q_geo["scale"]))
    np.save(folder / "q_offsets.npy", np.arange(n_queries + 1, dtype=np.int64) * query_features)
    _save_positives(folder, [np.sort(images[owner == q]) for q in range(n_queries)])


def _flips(rng: np.random.Generator, n: int, p: float) -> np.ndarray:
    """uint64[n] masks with each of the 64 bits set with probability p."""
    bits = rng.random((n, 64)) < p
    return np.packbits(bits, axis=1, bitorder="little").view("<u8")[:, 0]


def write_global(folder: Path, n: int, dim: int, n_queries: int, seed: int,
                 clusters: int = 4096) -> None:
    """Vectors as `bench_search.make_data` makes them (clustered distractors, planted
    positives, a third of them hard), written to a memory-mapped `db.npy` a block at a time."""
    from irbench.core.search import l2_normalize

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    centres = l2_normalize(rng.normal(size=(clusters, dim))).astype(np.float32)
    near = centres[rng.integers(0, clusters, n_queries)]
    q_centres = l2_normalize(near + rng.normal(size=(n_queries, dim)) / np.sqrt(dim))
    counts = rng.integers(10, 101, n_queries)
    idx = rng.choice(n, int(counts.sum()), replace=False)
    owner = np.repeat(np.arange(n_queries), counts)
    spread = np.where(rng.random(len(idx)) < 1 / 3, 2.0, 0.8)[:, None]
    planted = l2_normalize(q_centres[owner] + spread * rng.normal(size=(len(idx), dim))
                           / np.sqrt(dim)).astype(np.float32)
    order = np.argsort(idx)
    idx, planted = idx[order], planted[order]
    db = np.lib.format.open_memmap(folder / "db.npy", "w+", np.float32, (n, dim))
    rows = max(1, BLOCK * 16 // dim)
    for begin in range(0, n, rows):
        end = min(n, begin + rows)
        c = rng.integers(0, clusters, end - begin)
        noise = rng.standard_normal((end - begin, dim), dtype=np.float32) / np.sqrt(dim)
        block = l2_normalize(centres[c] + 1.2 * noise).astype(np.float32)
        lo, hi = np.searchsorted(idx, [begin, end])
        block[idx[lo:hi] - begin] = planted[lo:hi]
        db[begin:end] = block
    db.flush()
    del db
    queries = l2_normalize(q_centres + 0.5 * rng.normal(size=(n_queries, dim)) / np.sqrt(dim))
    np.save(folder / "queries.npy", queries.astype(np.float32))
    _save_positives(folder, [np.sort(idx[owner[order] == q]) for q in range(n_queries)])


def _save_positives(folder: Path, positives: list[np.ndarray]) -> None:
    np.save(folder / "positives.npy", np.concatenate(positives).astype(np.int64))
    np.save(folder / "positive_offsets.npy",
            np.concatenate([[0], np.cumsum([len(p) for p in positives])]).astype(np.int64))


def _load_positives(folder: Path) -> list[np.ndarray]:
    flat, off = np.load(folder / "positives.npy"), np.load(folder / "positive_offsets.npy")
    return [flat[a:b] for a, b in zip(off[:-1], off[1:], strict=True)]


# -- one configuration (in its own process) ----------------------------------------------


def _mmap(folder: Path, name: str) -> np.ndarray:
    return np.load(folder / f"{name}.npy", mmap_mode="r")


def _peak_rss() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _mean_ap(ranks: list[np.ndarray], positives: list[np.ndarray]) -> float:
    from irbench.core.metrics import average_precision_batch

    k = max(len(r) for r in ranks)
    table = np.full((len(ranks), k), -1, np.int64)
    for i, r in enumerate(ranks):
        table[i, :len(r)] = r
    ap = average_precision_batch(table, positives, [[] for _ in positives])
    return 100 * float(np.nanmean(ap))


def _recall_split(db: np.ndarray, queries: np.ndarray, ranks: np.ndarray,
                  positives: list[np.ndarray], depth: int = 100) -> dict:
    """Of each query's exact top-`depth`: the share that are planted positives, the
    recall@depth of `ranks` on them and on the rest (unplanted), the rest's mean
    similarity to the query, and the mean similarity of the best as many of N random
    unit vectors (the order statistics of N(0, 1/d): what noise alone reaches)."""
    from statistics import NormalDist

    from irbench.core.search import exact_search

    n, dim = db.shape
    exact, scores = exact_search(db, queries, depth)
    share, found_p, found_u, sim_u, sim_r = [], [], [], [], []
    for e, s, r, p in zip(exact, scores, ranks, positives, strict=True):
        planted = np.isin(e, p)
        got = np.isin(e, r[:depth])
        share.append(planted.mean())
        if planted.any():
            found_p.append(got[planted].mean())
        if not planted.all():
            m = int((~planted).sum())
            found_u.append(got[~planted].mean())
            sim_u.append(float(s[~planted].mean()))
            sim_r.append(sum(NormalDist().inv_cdf(1 - (j - 0.5) / n)
                             for j in range(1, m + 1)) / m / dim ** 0.5)

    def mean(x: list) -> float | None:
        return float(np.mean(x)) if x else None

    return {"planted_share": mean(share), "recall_planted": mean(found_p),
            "recall_unplanted": mean(found_u), "unplanted_similarity": mean(sim_u),
            "random_similarity": mean(sim_r)}


def _timed_queries(run_one, n: int) -> tuple[list[float], list[np.ndarray]]:
    times, ranks = [], []
    for i in range(n):
        t = time.perf_counter()
        ranks.append(np.asarray(run_one(i)))
        times.append(time.perf_counter() - t)
    return times, ranks


def run_sift(method: str, folder: Path, task: dict) -> dict:
    """Build `method`'s index on the memory-mapped data in `folder` and run the queries."""
    from irbench.methods.sift.hamming import HammingIndex
    from irbench.methods.sift.invfile import TfIdfIndex

    vocab = task["vocab"]
    words, offsets = _mmap(folder, "words"), np.load(folder / "offsets.npy")
    n = len(offsets) - 1
    qw, qoff = np.load(folder / "q_words.npy"), np.load(folder / "q_offsets.npy")
    positives = _load_positives(folder)
    nq = min(len(qoff) - 1, task["queries"])

    def q_slice(i: int) -> slice:
        return slice(int(qoff[i]), int(qoff[i + 1]))

    t = time.perf_counter()
    extra: dict = {}
    if method == "bow":
        index = TfIdfIndex.build(words, offsets, vocab)
        build = time.perf_counter() - t
        one = np.array([0, int(qoff[1] - qoff[0])])
        times, ranks = _timed_queries(lambda i: index.search(qw[q_slice(i)], one, DEPTH)[0][0],
                                      nq)
        nbytes = index.nbytes
    elif method == "he-wgc":
        cols = [_mmap(folder, c) for c in ("signatures", "angles", "scales")]
        index = HammingIndex.build(words, offsets, vocab, *cols)
        build = time.perf_counter() - t
        times, ranks, scanned = _he_queries(index, folder, qw, q_slice, nq)
        nbytes = index.nbytes
        extra["postings_per_query"] = scanned
    else:  # the verifier on the bow first stage
        from irbench.methods.base import RunContext
        from irbench.methods.registry import METHODS
        from irbench.methods.sift.verification import Geometry

        index = TfIdfIndex.build(words, offsets, vocab)
        cls = METHODS.get(task["verifier"])
        verifier = cls(cls.Config(shortlist=task["shortlist"]), RunContext.in_memory())
        geometry = Geometry(*(_mmap(folder, c) for c in ("x", "y", "angle", "scale")))
        verifier.load_index(index, geometry, words, offsets)
        build = time.perf_counter() - t
        q_geo = Geometry(*(np.load(folder / f"q_{c}.npy").astype(np.float64)
                           for c in ("x", "y", "angle", "scale")))
        one = np.array([0, int(qoff[1] - qoff[0])])

        def verify(i: int) -> np.ndarray:
            s = q_slice(i)
            first = index.scores(qw[s], one)[0]
            part = q_geo.take(np.arange(s.start, s.stop))
            return verifier.rerank_query(qw[s], part, first, DEPTH)[0]

        nq = min(nq, task["verifier_queries"])
        times, ranks = _timed_queries(verify, nq)
        nbytes = verifier.index_bytes()
        extra["shortlist"] = task["shortlist"]
    return {"n": n, "build_s": build, "bytes": int(nbytes), "latency_s": times,
            "map": _mean_ap(ranks, positives[:nq]), "queries": nq, **extra}


def _he_queries(index, folder: Path, qw: np.ndarray, q_slice, nq: int):
    from irbench.methods.sift.hamming import ScanSettings

    settings = ScanSettings()
    qsig, qang, qsca = (np.load(folder / f"q_{c}.npy")
                        for c in ("signatures", "angles", "scales"))
    scanned = []

    def one(i: int) -> np.ndarray:
        s = q_slice(i)
        ranks, _, m = index.search([(qw[s], qsig[s], qang[s], qsca[s])], DEPTH, settings)
        scanned.append(m)
        return ranks[0]

    times, ranks = _timed_queries(one, nq)
    return times, ranks, int(statistics.median(scanned))


HE_ARRAYS = ("indptr", "image_ids", "signature", "angle", "scale", "idf", "norms")


def run_he_mmap(phase: str, folder: Path, task: dict) -> dict:
    """'build': build the HE+WGC index and write its arrays as .npy files; 'query': open
    them memory-mapped (pages dropped from the page cache first) and run the queries."""
    from irbench.methods.sift.hamming import HammingIndex
    from irbench.methods.sift.invfile import InvertedFile

    index_dir = folder / "he-index"
    if phase == "build":
        words, offsets = _mmap(folder, "words"), np.load(folder / "offsets.npy")
        t = time.perf_counter()
        cols = [_mmap(folder, c) for c in ("signatures", "angles", "scales")]
        index_dir.mkdir(exist_ok=True)
        # built straight into .npy files (the streaming build), as the he-wgc stage
        # stores it in the cache: the index is never in memory whole
        index = HammingIndex.build(words, offsets, task["vocab"], *cols, folder=index_dir)
        inv = index.invfile
        arrays = {"indptr": inv.indptr, "image_ids": inv.image_ids, **inv.columns,
                  "idf": index.idf, "norms": index.norms}
        for name in HE_ARRAYS:
            if not (index_dir / f"{name}.npy").exists():
                np.save(index_dir / f"{name}.npy", arrays[name])
        return {"n": index.n_images, "build_s": time.perf_counter() - t,
                "bytes": int(index.nbytes)}
    for name in HE_ARRAYS:  # read from the disk, not from the page cache
        fd = os.open(index_dir / f"{name}.npy", os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    a = {name: np.load(index_dir / f"{name}.npy", mmap_mode="r") for name in HE_ARRAYS}
    inv = InvertedFile(a["indptr"], a["image_ids"], len(a["norms"]),
                       {c: a[c] for c in ("signature", "angle", "scale")})
    index = HammingIndex(inv, a["idf"], a["norms"])
    qw, qoff = np.load(folder / "q_words.npy"), np.load(folder / "q_offsets.npy")
    nq = min(len(qoff) - 1, task["queries"])
    times, ranks, scanned = _he_queries(
        index, folder, qw, lambda i: slice(int(qoff[i]), int(qoff[i + 1])), nq)
    return {"n": index.n_images, "bytes": int(index.nbytes), "latency_s": times,
            "map": _mean_ap(ranks, _load_positives(folder)[:nq]), "queries": nq,
            "postings_per_query": scanned,
            "disk_bytes": sum((index_dir / f"{x}.npy").stat().st_size for x in HE_ARRAYS)}


def run_global(kind: str, folder: Path, task: dict) -> dict:
    """Exact search, IVF-PQ (+ exact re-ranking) or HNSW on the memory-mapped vectors."""
    from irbench.core.search import (
        SearchSpec,
        _hnsw,
        _ivfpq,
        _rerank,
        exact_search,
        measure_recall,
    )

    db = _mmap(folder, "db")
    queries = np.load(folder / "queries.npy")[:task["queries"]]
    positives = _load_positives(folder)[:len(queries)]
    n = len(db)
    extra: dict = {}
    if kind == "exact":
        build, nbytes = 0.0, db.nbytes
        times, ranks = _timed_queries(lambda i: exact_search(db, queries[i:i + 1], DEPTH)[0][0],
                                      len(queries))
        extra["recall"] = 1.0
    else:
        if kind == "ivfpq":
            spec = SearchSpec("ivfpq", {"train_size": "65536", "rerank": str(DEPTH)})
            build_fn = _ivfpq
        else:
            spec = SearchSpec("hnsw", {"storage": "sq8"})
            build_fn = _hnsw
        t = time.perf_counter()
        index, used = build_fn(spec, db, DEPTH)
        build = time.perf_counter() - t
        import faiss

        nbytes = int(faiss.serialize_index(index).nbytes)
        rerank = used.get("rerank", 0)

        def one(i: int) -> np.ndarray:
            q = queries[i:i + 1]
            _, r = index.search(q, max(DEPTH, rerank))
            if rerank:
                _, r = _rerank(db, q, r)
            return r[0, :DEPTH]

        faiss.omp_set_num_threads(1)
        times, ranks = _timed_queries(one, len(queries))
        extra["recall"] = measure_recall(db, queries, np.stack(ranks))["recall"]
        extra["options"] = {k: v for k, v in used.items() if v}
    extra.update(_recall_split(db, queries, np.stack(ranks), positives))
    return {"n": n, "build_s": build, "bytes": int(nbytes), "latency_s": times,
            "map": _mean_ap(ranks, positives), "queries": len(queries), **extra}


def child(task: dict) -> None:
    """Entry of a configuration's process: run it and print one RESULT line of JSON."""
    folder = Path(task["folder"])
    t = time.perf_counter()
    what = task["what"]
    if what == "data-sift":
        write_sift(folder, task["n"], task["per_image"], task["query_features"],
                   task["vocab"], task["queries"], task["seed"])
        result: dict = {}
    elif what == "data-global":
        write_global(folder, task["n"], task["dim"], task["queries"], task["seed"],
                     task["clusters"])
        result = {}
    elif what in ("bow", "he-wgc", "verifier"):
        result = run_sift(what, folder, task)
    elif what.startswith("he-wgc-mmap:"):
        result = run_he_mmap(what.split(":")[1], folder, task)
    else:
        result = run_global(what, folder, task)
    result.update(wall_s=time.perf_counter() - t, peak_rss=_peak_rss())
    print("RESULT " + json.dumps(result), flush=True)


# -- the driver --------------------------------------------------------------------------


def spawn(task: dict, limit_s: float) -> dict:
    """Run `task` in a child process; {'error': ...} if it fails or runs past `limit_s`."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(task)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=limit_s)
    except subprocess.TimeoutExpired:
        return {"error": f"stopped after {limit_s / 60:.0f} min"}
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    return {"error": f"exit {done.returncode}: " + " | ".join(tail)}


def available_memory() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return "unknown CPU"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


class Estimator:
    """Peak RAM and seconds of a configuration: per unit (feature or vector float) priors,
    replaced by the method's own measurement at the largest smaller size, scaled by size."""

    def __init__(self) -> None:
        self.measured: dict[str, tuple[float, float, float]] = {}  # units, ram, seconds

    def estimate(self, key: str, family: str, units: float) -> tuple[float, float]:
        if key in self.measured:
            u, ram, sec = self.measured[key]
            return ram * units / u, sec * units / u
        return PRIOR_RAM[family] * units, PRIOR_SECONDS[family] * units

    def record(self, key: str, units: float, ram: float, seconds: float) -> None:
        self.measured[key] = (units, ram, seconds)


def fmt_bytes(b: float) -> str:
    return f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.1f} MiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--features-per-image", type=int, default=2000)
    ap.add_argument("--mmap-features-per-image", type=int, default=200,
                    help="density of he-wgc-mmap (run where full-density he-wgc is not)")
    ap.add_argument("--methods", default=DEFAULT_METHODS,
                    help="bow, he-wgc, the verifier's name, he-wgc-mmap, and "
                         "{exact,ivfpq,hnsw}-{512,4096} (any dimension)")
    ap.add_argument("--verifier", default="cop",
                    help="verifier method name (spatial-coding, geometric-coding, cop)")
    ap.add_argument("--shortlist", type=int, default=1000)
    ap.add_argument("--vocab", type=int, default=65_536)
    ap.add_argument("--clusters", type=int, default=4096,
                    help="cluster centres of the global vectors (module doc: at small N "
                         "few vectors share a cluster and recall@100 counts noise-level "
                         "neighbours)")
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--verifier-queries", type=int, default=5)
    ap.add_argument("--budget-s", type=float, default=240,
                    help="configurations estimated to take longer are not run; each run "
                         "is stopped after 3x this")
    ap.add_argument("--memory-margin", type=float, default=0.85,
                    help="fraction of the available memory a configuration may use")
    ap.add_argument("--out-dir", default=None, help="where the data go (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep --out-dir's data at the end")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    sizes = sorted(int(s) for s in args.sizes.split(","))
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    out = Path(args.out_dir or tempfile.mkdtemp(prefix="bench-scale-"))
    out.mkdir(parents=True, exist_ok=True)
    try:
        rows, skipped = run_all(args, sizes, methods, out)
    finally:
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    report(args, rows, skipped)


def run_all(args, sizes: list[int], methods: list[str], out: Path):
    est = Estimator()
    mem_total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; memory {mem_total / GiB:.1f} GiB "
          f"(available {available_memory() / GiB:.1f} GiB); free disk under {out}: "
          f"{shutil.disk_usage(out).free / GiB:.0f} GiB; budget {args.budget_s:.0f} s per "
          f"configuration", flush=True)
    F, Fm = args.features_per_image, args.mmap_features_per_image
    rows: list[dict] = []
    skipped: list[str] = []
    limit = 3 * args.budget_s
    sift = [m for m in methods if m in ("bow", "he-wgc", args.verifier)]
    globals_ = [m for m in methods if m.split("-")[0] in GLOBAL_KINDS]
    dims = sorted({int(m.split("-")[1]) for m in globals_})
    base = {"vocab": args.vocab, "queries": args.queries, "seed": args.seed,
            "verifier": args.verifier, "shortlist": args.shortlist,
            "verifier_queries": args.verifier_queries, "clusters": args.clusters}

    def data_seconds(key: str, family: str, units: float) -> float:
        if key in est.measured:
            return est.estimate(key, family, units)[1]
        return DATA_SECONDS[family] * units

    failed: set[str] = set()
    """Methods that failed or ran out of time: not tried again at a larger size."""

    def fits(label: str, ram: float, disk: float, seconds: float, key: str = "") -> bool:
        reasons = ["it failed at a smaller size"] if key in failed else []
        if ram > args.memory_margin * available_memory():
            reasons.append(f"{ram / GiB:.1f} GiB of memory")
        if disk > 0.9 * shutil.disk_usage(out).free:
            reasons.append(f"{disk / GiB:.1f} GiB of disk")
        if seconds > args.budget_s:
            reasons.append(f"{seconds / 60:.1f} min with its data")
        if reasons:
            skipped.append(f"{label}: not run: " + " / ".join(
                r if r.startswith("it failed") else f"estimated {r}" for r in reasons))
            print(f"  {skipped[-1]}", flush=True)
        return not reasons

    def measure(label: str, key: str, units: float, task: dict,
                row: dict | None = None) -> dict | None:
        print(f"  {label} ...", end="", flush=True)
        res = spawn(task, limit)
        if "error" in res:
            print(f" failed ({res['error']})", flush=True)
            skipped.append(f"{label}: failed ({res['error']})")
            failed.add(key)
            return None
        est.record(key, units, res["peak_rss"], res["wall_s"])
        print(f" {res['wall_s']:.0f} s, peak RSS {fmt_bytes(res['peak_rss'])}", flush=True)
        if row is not None:
            row.update(res)
            rows.append(row)
        return res

    for n in sizes:
        print(f"\nN = {n:,}", flush=True)
        # SIFT at full density
        units = n * F
        todo = []
        gen = data_seconds("data-sift", "sift", units)
        for m in sift:
            fam = "verifier" if m == args.verifier else m
            ram, sec = est.estimate(m, fam, units)
            if fits(f"{m} N={n:,} ({F} f/img)", ram, DATA_DISK["sift"] * units, sec + gen, m):
                todo.append((m, fam))
        he_full = any(m == "he-wgc" for m, _ in todo)
        if todo:
            folder = out / f"sift-{n}-{F}"
            if measure(f"data: {n:,} images x {F} features", "data-sift", units,
                       {**base, "what": "data-sift", "folder": str(folder), "n": n,
                        "per_image": F, "query_features": F}) is not None:
                for m, fam in todo:
                    measure(f"{m} N={n:,}", m, units,
                            {**base, "what": fam, "folder": str(folder)},
                            {"method": m, "n": n, "per_image": F})
            shutil.rmtree(folder, ignore_errors=True)
        # HE+WGC memory-mapped at a lower density, where the full density does not run
        if "he-wgc-mmap" in methods and not he_full:
            units_m = n * Fm
            ram, sec = est.estimate("he-wgc-mmap", "he-wgc-mmap", units_m)
            sec += data_seconds("data-sift", "sift", units_m)
            if "he-wgc-mmap-q" in est.measured:
                sec += est.estimate("he-wgc-mmap-q", "he-wgc-mmap", units_m)[1]
            disk = (DATA_DISK["sift"] + INDEX_DISK["he-wgc-mmap"]) * units_m
            if fits(f"he-wgc-mmap N={n:,} ({Fm} f/img)", ram, disk, sec, "he-wgc-mmap"):
                folder = out / f"sift-{n}-{Fm}"
                task = {**base, "folder": str(folder), "n": n, "per_image": Fm,
                        "query_features": F}
                if measure(f"data: {n:,} images x {Fm} features", "data-sift",
                           units_m, {**task, "what": "data-sift"}) is not None:
                    built = measure("he-wgc-mmap build", "he-wgc-mmap",
                                    units_m, {**task, "what": "he-wgc-mmap:build"})
                    if built is not None:
                        measure("he-wgc-mmap query (memory-mapped)", "he-wgc-mmap-q",
                                units_m, {**task, "what": "he-wgc-mmap:query"},
                                {"method": "he-wgc-mmap", "n": n, "per_image": Fm,
                                 "build_s": built["build_s"],
                                 "build_peak_rss": built["peak_rss"]})
                shutil.rmtree(folder, ignore_errors=True)
        # global vectors
        for dim in dims:
            units = n * dim
            todo = []
            gen = data_seconds("data-global", "global", units)
            for m in (g for g in globals_ if int(g.split("-")[1]) == dim):
                kind = m.split("-")[0]
                ram, sec = est.estimate(m, kind, units)
                ram = max(ram, PRIOR_RAM[kind] * units)  # the vectors it reads stay mapped
                if fits(f"{m} N={n:,}", ram, DATA_DISK["global"] * units, sec + gen, m):
                    todo.append((m, kind))
            if not todo:
                continue
            folder = out / f"global-{n}-{dim}"
            if measure(f"data: {n:,} x {dim}-D vectors", "data-global", units,
                       {**base, "what": "data-global", "folder": str(folder), "n": n,
                        "dim": dim}) is not None:
                for m, kind in todo:
                    measure(f"{m} N={n:,}", m, units, {**base, "what": kind, "folder": str(folder)},
                            {"method": m, "n": n})
            shutil.rmtree(folder, ignore_errors=True)
    return rows, skipped


def report(args, rows: list[dict], skipped: list[str]) -> None:
    F = args.features_per_image
    print(f"\nMeasured (median query latency over the queries; peak RSS = VmHWM of the "
          f"configuration's process, memory-mapped input pages included; mAP@{DEPTH} of "
          f"the planted positives; CPU: {cpu_model()}):")
    head = (f"{'method':<14}{'N':>11}{'f/img':>7}{'bytes/img':>12}{'build s':>9}"
            f"{'query ms':>10}{'peak RSS':>12}{'mAP':>7}{'R@100':>7}  notes")
    print(head)
    for r in rows:
        notes = []
        if "postings_per_query" in r:
            notes.append(f"{r['postings_per_query']:,} postings/query")
        if r["method"] == "he-wgc-mmap":
            notes.append(f"build peak RSS {fmt_bytes(r['build_peak_rss'])}, "
                         f"{fmt_bytes(r['disk_bytes'])} on disk, first query "
                         f"{1e3 * r['latency_s'][0]:.0f} ms (cold)")
        if "shortlist" in r:
            notes.append(f"shortlist {r['shortlist']}, incl. first stage")
        if r.get("planted_share") is not None:
            split = (f"exact top-100: {100 * r['planted_share']:.0f}% planted, R@100 "
                     f"{r['recall_planted']:.3f}")
            if r.get("recall_unplanted") is not None:
                split += (f"; the rest R@100 {r['recall_unplanted']:.3f}, similarity "
                          f"{r['unplanted_similarity']:.2f} (random: "
                          f"{r['random_similarity']:.2f})")
            notes.append(split)
        notes.append(f"{r['queries']} queries")
        recall = f"{r['recall']:.3f}" if r.get("recall") is not None else "-"
        print(f"{r['method']:<14}{r['n']:>11,}{r.get('per_image', '-'):>7}"
              f"{r['bytes'] / r['n']:>12,.0f}{r['build_s']:>9.1f}"
              f"{1e3 * statistics.median(r['latency_s']):>10.1f}"
              f"{fmt_bytes(r['peak_rss']):>12}{r['map']:>7.1f}{recall:>7}  "
              + "; ".join(notes))
    if skipped:
        print("\nNot run:")
        for s in skipped:
            print(f"  {s}")
    print("\nExtrapolated (NOT measured), linear in N from each method's largest measured "
          "size; peak RSS from the slope between its two largest sizes (or RSS / N); "
          "latency linear in N is an upper bound for ivfpq and hnsw:")
    print(f"{'method':<14}{'N':>11}{'f/img':>7}{'index GiB':>11}{'build min':>11}"
          f"{'query ms':>10}{'peak RSS':>12}")
    by_method: dict[str, list[dict]] = {}
    for r in rows:
        by_method.setdefault(r["method"], []).append(r)
    for method, rs in by_method.items():
        rs = sorted(rs, key=lambda r: r["n"])
        last = rs[-1]
        if len(rs) > 1 and rs[-1]["n"] > rs[-2]["n"]:
            slope = (rs[-1]["peak_rss"] - rs[-2]["peak_rss"]) / (rs[-1]["n"] - rs[-2]["n"])
            slope = max(slope, 0.0)
        else:
            slope = last["peak_rss"] / last["n"]
        density = F / last["per_image"] if method == "he-wgc-mmap" else 1.0
        for target in (105_000, 1_000_000):
            if target <= last["n"] and density == 1.0:
                continue
            scale = target / last["n"] * density
            lat = 1e3 * statistics.median(last["latency_s"]) * scale
            first = [r for r in by_method.get("bow", []) if r["n"] == last["n"]]
            if method == args.verifier and first:  # the shortlist's cost does not grow
                bow_lat = 1e3 * statistics.median(first[0]["latency_s"])
                lat = 1e3 * statistics.median(last["latency_s"]) + bow_lat * (scale - 1)
            rss = last["peak_rss"] + slope * (target - last["n"]) * density
            if method == "he-wgc-mmap":
                rss = float("nan")  # its query RSS follows the pages read, not N
            print(f"{method:<14}{target:>11,}{F if 'per_image' in last else '-':>7}"
                  f"{last['bytes'] * scale / GiB:>11.2f}{last['build_s'] * scale / 60:>11.1f}"
                  f"{lat:>10.0f}"
                  f"{'-' if rss != rss else fmt_bytes(rss):>12}")
    print("\nGoals: he-wgc at 100,000 x 2,000 features within 8 GB peak RSS; R1M global "
          "search within 8 GB with recall@100 >= 0.95; a 1M-image HE+WGC index on disk, "
          "memory-mapped, with its measured query latency (he-wgc-mmap rows; at "
          f"{args.mmap_features_per_image} f/img measured, {F} f/img extrapolated).")


if __name__ == "__main__":
    main()
