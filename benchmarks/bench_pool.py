"""SIFT extraction in shards: one worker pool per shard against one for every shard
(`irbench.core.parallel.shared_pool`, which `extract_features` uses).

In one run, on the same images (the `demo` set with `--distractors` clutter images, 320 x
240), it extracts SIFT (`irbench.methods.sift.keypoints`, default parameters) shard by
shard (`--shard-size`, the extraction's 256 by default) in `--workers` processes, the
two ways alternately, `--repeats` times each. Prints the median wall time of each, the
ratio per-shard / shared, and the start-up cost of one pool that the ratio comes from
(a pool started for two trivial items, median of 5). Both ways return identical arrays
(checked).

Run: python benchmarks/bench_pool.py [--distractors 1000] [--shard-size 256]
        [--workers 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
from bench_sift_baselines import cpu_model  # the CPU model as lscpu names it

from irbench.core.parallel import parallel_map, shared_pool
from irbench.datasets.registry import load_dataset
from irbench.methods.sift.keypoints import SiftParams, _worker


def extract(tasks: list, shard: int, workers: int) -> list:
    out: list = []
    for start in range(0, len(tasks), shard):
        out += parallel_map(_worker, tasks[start:start + shard], workers=workers,
                            chunksize=4)
    return out


def shared(tasks: list, shard: int, workers: int) -> list:
    with shared_pool():
        return extract(tasks, shard, workers)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--distractors", type=int, default=1000)
    ap.add_argument("--shard-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        ds = load_dataset("demo", cache_dir=cache,
                          options={"distractors": str(args.distractors)})
        images = [im.path for im in ds.database]
        params = SiftParams()
        tasks = [(str(p), None, params) for p in images]
        times: dict[str, list[float]] = {"per shard": [], "shared": []}
        results = {}
        for _ in range(args.repeats):
            for name, fn in (("per shard", extract), ("shared", shared)):
                t = time.perf_counter()
                results[name] = fn(tasks, args.shard_size, args.workers)
                times[name].append(time.perf_counter() - t)
    same = all(a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
               for a, b in zip(results["per shard"], results["shared"], strict=True))
    starts = []
    for _ in range(5):
        t = time.perf_counter()
        parallel_map(abs, [1, 2], workers=args.workers, chunksize=1)
        starts.append(time.perf_counter() - t)
    n_shards = -(-len(tasks) // args.shard_size)
    print(f"machine: {cpu_model()}, {args.workers} workers; "
          f"{len(tasks)} images in {n_shards} shards of {args.shard_size}")
    for name, ts in times.items():
        print(f"  {name:>9}: median {statistics.median(ts):7.2f} s  "
              f"({', '.join(f'{t:.2f}' for t in ts)})")
    ratio = statistics.median(times["per shard"]) / statistics.median(times["shared"])
    print(f"  per shard / shared: {ratio:.3f}; identical features: {same}")
    print(f"  one pool started for 2 trivial items: median {statistics.median(starts):.2f} s")


if __name__ == "__main__":
    main()
