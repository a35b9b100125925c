"""Benchmark: approximate dense search (`--search ivfpq|hnsw`) against exact search on
a synthetic database with planted neighbours, up to the size of R1M.

The database: `--n` unit vectors of `--dim` dimensions (default 1,001,001 x 512, the
size of revisited Oxford + R1M), drawn around `--clusters` random centres so that it
has the structure real descriptors have (uniform random vectors are the worst case of
any quantiser). `--queries` queries (default 70, as rOxford) each get between 10 and 100
planted positives around their own centre, which lies near one of the distractor
clusters; a third of the positives are "hard" (noisier, as similar to the query as that
cluster's members are), so that exact search is far from perfect.

For each backend (the harness's own `irbench.core.search.search`, index built inside
the call) it prints: seconds for the whole call (build + search), the index bytes
(faiss's serialized index; for exact search the raw float32 vectors), recall@100 against
exact search (every query), and mAP over the top `--depth` (default 1000; the same depth
for every backend, so positives below it count as missed everywhere) with its
difference to exact search, and the ratios to exact search.

    python benchmarks/bench_search.py [--n 1001001] [--dim 512] [--hnsw]

The 1,001,001-vector run needs about 2 GB for the vectors (float32) and about 15 minutes
on two cores (mostly training IVF-PQ); `--n 100000` takes about a minute.

Caveat on ΔmAP: the positives are the query's centre plus isotropic Gaussian noise, and
IVF-PQ reconstructs a vector from a coarse centroid and 64 sub-codes, which keeps the
centre and drops much of that noise; the harder positives then score higher against the
query than they do exactly, so ΔmAP may come out positive without the index being better.
recall@100 against exact search is the measure of fidelity here. `--check-reconstruction`
shows it: exact search on the reconstructed vectors has the higher mAP too.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from irbench.core.metrics import average_precision_batch
from irbench.core.search import SearchSpec, exact_search, l2_normalize, search


def make_data(n: int, dim: int, clusters: int, nq: int, seed: int):
    """(database float32[n, dim], queries float32[nq, dim], positives per query)."""
    rng = np.random.default_rng(seed)
    centres = l2_normalize(rng.normal(size=(clusters, dim)))
    db = np.empty((n, dim), np.float32)
    chunk = 100_000
    for begin in range(0, n, chunk):
        end = min(n, begin + chunk)
        c = rng.integers(0, clusters, end - begin)
        noise = rng.normal(size=(end - begin, dim)).astype(np.float32) / np.sqrt(dim)
        db[begin:end] = l2_normalize(centres[c] + 1.2 * noise)
    # each query's object sits near a distractor cluster (cosine ~0.7 to its centre), so
    # that cluster's members compete with the query's harder positives
    near = centres[rng.integers(0, clusters, nq)]
    q_centres = l2_normalize(near + rng.normal(size=(nq, dim)) / np.sqrt(dim))
    positives, free = [], rng.permutation(n)
    used = 0
    for i in range(nq):
        p = int(rng.integers(10, 101))
        idx = np.sort(free[used:used + p])
        used += p
        hard = rng.random(p) < 1 / 3
        spread = np.where(hard, 2.0, 0.8)[:, None]
        noise = rng.normal(size=(p, dim)).astype(np.float32) / np.sqrt(dim)
        db[idx] = l2_normalize(q_centres[i] + spread * noise)
        positives.append(idx)
    queries = l2_normalize(q_centres + 0.5 * rng.normal(size=(nq, dim)) / np.sqrt(dim))
    return db, queries.astype(np.float32), positives


def evaluate(name, db, queries, positives, depth, spec, exact_top):
    start = time.perf_counter()
    ranks, _ = search(db, queries, depth, backend=spec)
    seconds = time.perf_counter() - start
    ap = average_precision_batch(ranks, positives, [[] for _ in positives])
    k = min(100, depth)
    recall = np.mean([len(set(a[:k]) & set(e[:k])) / k
                      for a, e in zip(ranks, exact_top, strict=True)])
    report = spec.report if isinstance(spec, SearchSpec) else {}
    return {"name": name, "seconds": seconds, "build": report.get("build_seconds", 0.0),
            "search": report.get("search_seconds", seconds),
            "bytes": report.get("index_bytes", db.nbytes), "recall": recall,
            "map": 100 * float(np.nanmean(ap))}


def check_reconstruction(db, queries, positives, args) -> None:
    """mAP of exact search on the vectors and on their IVF-PQ reconstructions (the
    harness's default IVF-PQ), and the positives' mean similarity to their query."""
    from irbench.core.search import _ivfpq

    spec = SearchSpec("ivfpq", {"train_size": str(args.train_size)})
    index, used = _ivfpq(spec, db, args.depth)
    index.make_direct_map()
    recon = index.reconstruct_n(0, len(db))
    none = [[] for _ in positives]

    def map_of(vectors):
        ranks, _ = exact_search(vectors, queries, args.depth)
        return 100 * float(np.nanmean(average_precision_batch(ranks, positives, none)))

    owner = np.repeat(np.arange(len(positives)), [len(p) for p in positives])
    idx = np.concatenate(positives)
    print(f"IVF-PQ {used}")
    print(f"exact search on the vectors:            mAP@{args.depth} {map_of(db):.2f}")
    print(f"exact search on the PQ reconstructions: mAP@{args.depth} {map_of(recon):.2f}")
    print(f"query . positive, mean: vectors {np.sum(queries[owner] * db[idx], 1).mean():.3f}, "
          f"reconstructions {np.sum(queries[owner] * recon[idx], 1).mean():.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_001_001)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--clusters", type=int, default=4096)
    ap.add_argument("--queries", type=int, default=70)
    ap.add_argument("--depth", type=int, default=1000)
    ap.add_argument("--train-size", type=int, default=131072,
                    help="ivfpq training vectors (its default, 256 nlist, is ~1M here)")
    ap.add_argument("--hnsw", action="store_true", help="also HNSW (slow to build at 1M)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check-reconstruction", action="store_true",
                    help="only say where IVF-PQ's ΔmAP comes from: exact search on the PQ "
                         "reconstructions of the vectors, and how the positives' similarity "
                         "to their query moves")
    args = ap.parse_args()
    t0 = time.perf_counter()
    db, queries, positives = make_data(args.n, args.dim, args.clusters, args.queries,
                                       args.seed)
    print(f"{args.n:,} x {args.dim} vectors, {args.queries} queries with planted positives "
          f"({sum(map(len, positives)):,} in all), made in {time.perf_counter() - t0:.0f} s; "
          f"{platform.processor() or platform.machine()}")
    if args.check_reconstruction:
        check_reconstruction(db, queries, positives, args)
        return
    exact_top, _ = exact_search(db, queries, 100)
    train = str(args.train_size)
    runs = [("exact", "exact"), ("faiss flat", SearchSpec("faiss")),
            ("ivfpq", SearchSpec("ivfpq", {"train_size": train})),
            ("ivfpq rerank=1000", SearchSpec("ivfpq", {"train_size": train,
                                                       "rerank": "1000"}))]
    if args.hnsw:
        runs.append(("hnsw sq8", SearchSpec("hnsw", {"storage": "sq8"})))
    rows = [evaluate(name, db, queries, positives, args.depth, spec, exact_top)
            for name, spec in runs]
    base = rows[0]
    print(f"\n{'backend':<18}{'build s':>9}{'search s':>10}{'index MiB':>11}"
          f"{'recall@100':>12}{'mAP@' + str(args.depth):>10}{'ΔmAP':>8}"
          f"{'search ratio':>14}{'size ratio':>12}")
    for r in rows:
        print(f"{r['name']:<18}{r['build']:>9.1f}{r['search']:>10.2f}"
              f"{r['bytes'] / 2**20:>11.1f}{r['recall']:>12.3f}{r['map']:>10.2f}"
              f"{r['map'] - base['map']:>+8.2f}{r['search'] / base['search']:>14.3f}"
              f"{r['bytes'] / base['bytes']:>12.3f}")
    print("\nbuild s: training and filling the faiss index (0 for numpy exact search); "
          "search s: the queries (exact: the whole call); index MiB: faiss's serialized "
          "index (exact: the raw float32 vectors); rerank also reads the raw vectors, "
          "which its index size does not count. recall@100 is the fidelity to exact "
          "search; ΔmAP can be positive on this synthetic data, where the positives' "
          "noise is isotropic and product quantisation removes part of it (see the "
          "module doc).")


if __name__ == "__main__":
    main()
