"""Benchmark: the HE+WGC inverted-file scan, and the query latency of every SIFT baseline.

One synthetic index (default 100,000 images x 100 features = 10 million postings, a
65,536-word vocabulary, uniform random 64-bit signatures, angle and scale codes, and
keypoint positions), then, in one run:

1. Build time and bytes per posting of `HammingIndex` (image id uint32, signature
   uint64, angle and scale uint8).
2. Scan throughput: postings scanned per second by `HammingIndex.scores` (Hamming
   distances with `np.bitwise_count`, votes and WGC histograms with `np.bincount`),
   median over the queries; each query is 1,000 features, half of them near copies of
   database image 0's features (so there are matches to vote for).
3. The same scan as a straightforward per-posting Python loop (the definitions of the
   paper one posting at a time), on the first `--naive-postings` postings of one
   query, and the ratio of the two rates (the goal is at least 50x).
4. Query latency of each method on this index, median over the queries: bow (tf-idf),
   he-wgc, spatial-coding, geometric-coding and cop (first stage + verification of a
   1,000-image shortlist), and vlad-intra (exact dense search of `--vlad-images` VLAD
   vectors of its default dimension, 32,768-D: 20,000 by default, 2.6 GB; 100,000
   would need 13 GB, so the 100k figure printed beside it is that time x 5, exact
   search being linear in the database size).
5. Verification alone, per query, for the three verifiers: the straightforward form
   (`rerank_query(..., reference=True)`: per image, tentative matches and `inliers`) against
   the array form (`verify_shortlist`: the whole shortlist's matches at once,
   `inlier_counts` over many images), for a top-100 re-ranking (images that cannot enter
   it are pruned) and for a full one (no pruning); medians over the queries, the ratios,
   and a check that all three give identical ranks and scores. The CPU model and the load
   average are printed with it: timings on a shared machine are only comparable within
   one run.

    python benchmarks/bench_sift_baselines.py [--images 100000] [--features 100]
    python benchmarks/bench_sift_baselines.py --verification-only [--images 20000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time

import numpy as np

from irbench.core.search import search
from irbench.methods.base import RunContext
from irbench.methods.registry import METHODS
from irbench.methods.sift.hamming import HammingIndex, ScanSettings
from irbench.methods.sift.invfile import TfIdfIndex
from irbench.methods.sift.verification import Geometry

VERIFIERS = ("spatial-coding", "geometric-coding", "cop")


def synthetic_index(rng: np.random.Generator, n_images: int, per_image: int, vocab: int):
    f = n_images * per_image
    words = rng.integers(0, vocab, f).astype(np.uint32)
    offsets = np.arange(n_images + 1, dtype=np.int64) * per_image
    sig = rng.integers(0, np.iinfo(np.uint64).max, f, dtype=np.uint64, endpoint=True)
    ang = rng.integers(0, 256, f).astype(np.uint8)
    sca = rng.integers(0, 256, f).astype(np.uint8)
    geom = Geometry(rng.uniform(0, 640, f).astype(np.float32),
                    rng.uniform(0, 480, f).astype(np.float32),
                    rng.uniform(0, 2 * np.pi, f).astype(np.float32),
                    rng.uniform(2, 40, f).astype(np.float32))
    return words, offsets, sig, ang, sca, geom


def synthetic_query(rng, words, sig, ang, sca, geom, per_image: int, size: int, vocab: int):
    """Half copies of database image 0's features (a few bits flipped, one rotation and
    translation of the positions), half random features."""
    own = np.arange(min(per_image, size // 2))
    n_rand = size - len(own)
    flip = np.uint64(1) << rng.integers(0, 64, len(own)).astype(np.uint64)
    theta = np.deg2rad(20.0)
    c, s = np.cos(theta), np.sin(theta)
    x, y = geom.x[own].astype(np.float64), geom.y[own].astype(np.float64)
    q_words = np.concatenate([words[own], rng.integers(0, vocab, n_rand)]).astype(np.int64)
    q_sig = np.concatenate([sig[own] ^ flip,
                            rng.integers(0, 2**63, n_rand, dtype=np.uint64)])
    q_ang = np.concatenate([(ang[own].astype(np.int64) + 14) % 256,
                            rng.integers(0, 256, n_rand)]).astype(np.uint8)
    q_sca = np.concatenate([sca[own], rng.integers(0, 256, n_rand)]).astype(np.uint8)
    q_geom = Geometry(np.concatenate([c * x - s * y + 30, rng.uniform(0, 640, n_rand)]),
                      np.concatenate([s * x + c * y + 10, rng.uniform(0, 480, n_rand)]),
                      np.concatenate([geom.angle[own] - theta,
                                      rng.uniform(0, 2 * np.pi, n_rand)]),
                      np.concatenate([geom.scale[own], rng.uniform(2, 40, n_rand)]))
    return (q_words, q_sig, q_ang, q_sca), q_geom


def naive_scan(index: HammingIndex, query, s: ScanSettings, limit: int) -> int:
    """The scan one posting at a time in Python, stopping after `limit` postings; returns
    the number of postings scanned (the votes are computed and discarded)."""
    words, sigs, angs, scas = query
    inv = index.invfile
    sig_col, ang_col, sca_col = (inv.columns["signature"], inv.columns["angle"],
                                 inv.columns["scale"])
    votes: dict[int, float] = {}
    hist_a: dict[tuple[int, int], float] = {}
    hist_s: dict[tuple[int, int], float] = {}
    scanned = 0
    for i, w in enumerate(words):
        for p in range(int(inv.indptr[w]), int(inv.indptr[w + 1])):
            scanned += 1
            if bin(int(sig_col[p]) ^ int(sigs[i])).count("1") > s.hamming_threshold:
                continue
            img = int(inv.image_ids[p])
            weight = float(index.idf[w]) ** 2
            abin = (((int(angs[i]) - int(ang_col[p])) + 16) % 256) * s.angle_bins // 256
            sbin = min(max(int(np.floor((int(scas[i]) - int(sca_col[p])) / 8 + 0.5)) + 4, 0), 7)
            votes[img] = votes.get(img, 0.0) + weight
            hist_a[img, abin] = hist_a.get((img, abin), 0.0) + weight
            hist_s[img, sbin] = hist_s.get((img, sbin), 0.0) + weight
            if scanned >= limit:
                return scanned
    return scanned


def median_time(fn, items) -> tuple[float, list]:
    times, outs = [], []
    for item in items:
        t = time.perf_counter()
        outs.append(fn(item))
        times.append(time.perf_counter() - t)
    return statistics.median(times), outs


def cpu_model() -> str:
    """The CPU model as lscpu names it (else platform's guess)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        import platform

        return platform.processor() or "unknown CPU"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def verification_table(words, offsets, geom, queries, shortlist: int, k: int) -> None:
    """Per-query verification seconds of each verifier: straightforward vs array form."""
    n_images = len(offsets) - 1
    vocab = int(words.max()) + 1
    bow = TfIdfIndex.build(words, offsets, vocab)
    one = np.array([0, len(queries[0][0][0])])
    first = [bow.scores(q[0][0], one)[0] for q in queries]
    print(f"\nverification of a {shortlist:,}-image shortlist, seconds per query (median of "
          f"{len(queries)}; {cpu_model()}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} at the start):")
    print(f"  {'method':18s} {'naive':>8s} {'top-' + str(k):>8s} {'ratio':>7s} "
          f"{'full':>8s} {'ratio':>7s}  identical  pruned/query")
    for name in VERIFIERS:
        cls = METHODS.get(name)
        method = cls(cls.Config(shortlist=shortlist), RunContext.in_memory())
        method.load_index(bow, geom, words, offsets)
        times: dict[str, list[float]] = {"naive": [], "top": [], "full": []}
        same, pruned = True, []
        for q, scores in zip(queries, first, strict=True):
            q_words, q_geom = q[0][0], q[1]
            runs = {}
            for label, kk, reference in (("naive", k, True), ("top", k, False),
                                         ("full", n_images, False)):
                t = time.perf_counter()
                runs[label] = method.rerank_query(q_words, q_geom, scores, kk,
                                                  reference=reference)
                times[label].append(time.perf_counter() - t)
            for label in ("top",):
                same &= bool(np.array_equal(runs[label][0], runs["naive"][0])
                             and np.array_equal(runs[label][1], runs["naive"][1]))
            full_ref = method.rerank_query(q_words, q_geom, scores, n_images, reference=True)
            same &= bool(np.array_equal(runs["full"][0], full_ref[0])
                         and np.array_equal(runs["full"][1], full_ref[1]))
            pruned.append(int(runs["naive"][2][0] - runs["top"][2][0]))
        med = {label: statistics.median(v) for label, v in times.items()}
        print(f"  {name:18s} {med['naive']:8.3f} {med['top']:8.3f} "
              f"{med['naive'] / med['top']:6.1f}x {med['full']:8.3f} "
              f"{med['naive'] / med['full']:6.1f}x  {'yes' if same else 'NO':9s}  "
              f"{statistics.median(pruned):.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--features", type=int, default=100, help="features per database image")
    ap.add_argument("--vocab", type=int, default=65_536)
    ap.add_argument("--queries", type=int, default=10)
    ap.add_argument("--query-features", type=int, default=1000)
    ap.add_argument("--naive-postings", type=int, default=200_000)
    ap.add_argument("--shortlist", type=int, default=1000)
    ap.add_argument("--vlad-images", type=int, default=20_000,
                    help="database size of the vlad-intra latency")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verification-only", action="store_true",
                    help="only part 5 (verification, straightforward vs array form)")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    if args.verification_only:
        words, offsets, sig, ang, sca, geom = synthetic_index(rng, args.images, args.features,
                                                              args.vocab)
        queries = [synthetic_query(rng, words, sig, ang, sca, geom, args.features,
                                   args.query_features, args.vocab)
                   for _ in range(args.queries)]
        verification_table(words, offsets, geom, queries, args.shortlist, 100)
        return

    t = time.perf_counter()
    words, offsets, sig, ang, sca, geom = synthetic_index(rng, args.images, args.features,
                                                          args.vocab)
    t_gen = time.perf_counter() - t
    t = time.perf_counter()
    index = HammingIndex.build(words, offsets, args.vocab, sig, ang, sca)
    t_build = time.perf_counter() - t
    inv = index.invfile
    per_posting = inv.image_ids.itemsize + sum(c.itemsize for c in inv.columns.values())
    print(f"synthetic index: {args.images:,} images, {inv.n_postings:,} postings, "
          f"{args.vocab:,} words (generated in {t_gen:.1f} s, built in {t_build:.1f} s)")
    print(f"bytes per posting: {per_posting} (posting arrays), "
          f"{index.nbytes / inv.n_postings:.2f} (with indptr, idf and norms)")

    queries = [synthetic_query(rng, words, sig, ang, sca, geom, args.features,
                               args.query_features, args.vocab) for _ in range(args.queries)]
    settings = ScanSettings()
    index.scores(*queries[0][0], settings)  # warm-up
    scan_time, outs = median_time(lambda q: index.scores(*q[0], settings), queries)
    scanned = statistics.median(o[1] for o in outs)
    rate = scanned / scan_time
    top = [int(np.argmax(o[0])) for o in outs]
    print(f"he-wgc scan: {scanned:,.0f} postings per query in {scan_time * 1e3:.1f} ms "
          f"(median): {rate / 1e6:.1f} M postings/s; planted image ranked first in "
          f"{sum(t == 0 for t in top)}/{len(top)} queries")
    t = time.perf_counter()
    n_naive = naive_scan(index, queries[0][0], settings, args.naive_postings)
    naive_rate = n_naive / (time.perf_counter() - t)
    print(f"per-posting Python loop: {n_naive:,} postings at {naive_rate / 1e6:.3f} M "
          f"postings/s -> vectorized scan is {rate / naive_rate:.0f}x faster")

    print(f"\nquery latency on {args.images:,} images ({args.query_features} query features, "
          f"median of {args.queries}):")
    bow = TfIdfIndex.build(words, offsets, args.vocab)
    one = np.array([0, args.query_features])
    lat, _ = median_time(lambda q: bow.search(q[0][0], one, 100), queries)
    print(f"  {'bow':18s} {lat * 1e3:9.1f} ms")
    lat_he, _ = median_time(lambda q: index.search([q[0]], 100, settings), queries)
    print(f"  {'he-wgc':18s} {lat_he * 1e3:9.1f} ms")
    first = [bow.scores(q[0][0], one)[0] for q in queries]
    for name in VERIFIERS:
        if name not in METHODS.names():
            print(f"  {name:18s} (not registered)")
            continue
        cls = METHODS.get(name)
        method = cls(cls.Config(shortlist=args.shortlist), RunContext.in_memory())
        method.load_index(bow, geom, words, offsets)

        def verified(i: int, method=method) -> int:
            q_words, q_geom = queries[i][0][0], queries[i][1]
            scores = bow.scores(q_words, one)[0]
            ranks, _, _ = method.rerank_query(q_words, q_geom, scores, 100)
            return int(ranks[0])

        lat, firsts = median_time(verified, range(len(queries)))
        print(f"  {name:18s} {lat * 1e3:9.1f} ms  (shortlist {args.shortlist}; planted image "
              f"first in {sum(f == 0 for f in firsts)}/{len(firsts)})")
    del first
    if "vlad-intra" in METHODS.names():
        cls = METHODS.get("vlad-intra")
        cfg = cls.Config()
        dim = int(cfg.vocabulary_size) * 128
        n_vlad = args.vlad_images
        db = rng.standard_normal((n_vlad, dim), dtype=np.float32)
        db /= np.linalg.norm(db, axis=1, keepdims=True)
        lat, _ = median_time(lambda q: search(db, db[q:q + 1], 100), range(args.queries))
        print(f"  {'vlad-intra':18s} {lat * 1e3:9.1f} ms  ({n_vlad:,} x {dim}-D, exact search; "
              f"x{args.images / n_vlad:.1f} for {args.images:,} images: "
              f"~{lat * args.images / n_vlad * 1e3:.0f} ms)")
    verification_table(words, offsets, geom, queries, args.shortlist, 100)


if __name__ == "__main__":
    main()
