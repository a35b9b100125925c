"""Working memory per added database image, for every method: demo + N clutter images.

    python benchmarks/bench_memory.py [--sizes 0,5000] [--methods bow,he-wgc,...]
                                      [--cache-dir DIR]

For each method and each N, one fresh Python process runs `bench run -m METHOD -d demo
--dataset-option distractors=N` through the runner, which samples the process's resident
memory during each stage (`StageTiming.peak_rss_bytes`: /proc statm, every 20 ms). What
the benchmark isolates is the working memory of indexing and querying: the images' SIFT
features / CNN features, the vocabulary, the Hamming embedding and trained networks are
reused from the cache when there (their computation's memory is a constant: one shard of
images at a time, in worker processes), and everything after them (words, signatures,
inverted files, geometry, rankings) is computed in the measured process. It prints per
method and N the database size, the peak resident memory of each stage, and then the
growth per added database image between the smallest and largest N, with the mean
number of SIFT features per added image (the issue's goal is at most 12 KB per added
image at 155 features per image for HE+WGC).

The demo set with N distractors is generated on first use (about 25 s per 1,000 images
here), and the first run of a method extracts its features: the first invocation takes
minutes; later ones reuse all that. DR-CNN is not in the default list: detecting the
clutter images takes about half a second each on a CPU (`--methods drcnn` with the small
settings of the README measures it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

DEFAULT_METHODS = ("bow", "he-wgc", "spatial-coding", "geometric-coding", "cop", "vlad-intra",
                   "cnn", "fcnn")
SMALL_BACKBONE = {"cnn": ["backbone=efficientnet-lite0"],
                  "fcnn": ["backbone=efficientnet-lite0"]}
"""VGG16's ImageNet weights are not shipped; the CNN methods run on EfficientNet-Lite0."""

REUSED = ("features", "vocabulary", "embedding", "detector", "finetune", "regions",
          "query_regions", "vlad", "whitening")
"""Stages (the last part of an artifact's kind) reused when cached: per-image descriptors
(SIFT and CNN features, DR-CNN regions, VLAD vectors) and what is trained. Every other
artifact is computed again in the measured process."""

CHILD = r"""
import json, sys
from irbench.core import cache as C
reuse = C.Cache._reuse
def selective(self, kind, key_hash, start):
    if kind.rsplit("/", 1)[-1] not in REUSED:
        return None
    return reuse(self, kind, key_hash, start)
C.Cache._reuse = selective
from irbench.harness.runner import RunOptions, run
n, method, sets = int(sys.argv[1]), sys.argv[2], dict(a.split("=", 1) for a in sys.argv[3:])
rec = run(method, "demo", RunOptions(results_dir=None, dataset_options={"distractors": n}),
          sets or None)
print("RESULT", json.dumps({
    "n_db": rec.database_size, "map": rec.metrics.map, "index_bytes": rec.index_bytes,
    "features": rec.method_info.get("database_features"),
    "peak": {k: v.peak_rss_bytes for k, v in rec.timings.items()}}))
"""


def measure(method: str, n: int, sets: list[str]) -> dict:
    """One run in a fresh process; its record's facts."""
    code = f"REUSED = {REUSED!r}\n{CHILD}"
    out = subprocess.run([sys.executable, "-c", code, str(n), method, *sets],
                         capture_output=True, text=True, env=os.environ.copy())
    found = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not found:
        raise RuntimeError(f"{method} at N={n} failed:\n{out.stderr[-2000:]}")
    return json.loads(found[-1][len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0,5000",
                        help="numbers of distractors, comma-separated (default 0,5000)")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    parser.add_argument("--cache-dir", default=None,
                        help="cache (default: IRBENCH_CACHE or the user's cache)")
    args = parser.parse_args()
    if args.cache_dir:
        os.environ["IRBENCH_CACHE"] = args.cache_dir
    sizes = sorted(int(s) for s in args.sizes.split(","))
    cpu = next((line.split(":", 1)[1].strip() for line in
                subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
                if line.startswith("Model name")), "unknown CPU")
    print(f"# peak resident memory per stage (MiB); {cpu}, {os.cpu_count()} CPUs")
    summary = []
    for method in args.methods.split(","):
        rows = []
        for n in sizes:
            r = measure(method, n, SMALL_BACKBONE.get(method, []))
            rows.append(r)
            stages = "  ".join(f"{k} {v / 2**20:7.1f}" for k, v in r["peak"].items())
            print(f"{method:17s} N={n:6d} db={r['n_db']:6d}  {stages}  "
                  f"index {r['index_bytes'] or 0:>11,d} B  mAP {100 * (r['map'] or 0):.2f}",
                  flush=True)
        first, last = rows[0], rows[-1]
        added = last["n_db"] - first["n_db"]
        if added <= 0:
            continue
        worst = max(last["peak"][s] - first["peak"][s] for s in ("index", "query"))
        feats = ((last["features"] or 0) - (first["features"] or 0)) / added
        summary.append((method, worst / added / 1024,
                        ((last["index_bytes"] or 0) - (first["index_bytes"] or 0)) / added,
                        feats))
    print("\n# growth per added database image (index or query stage, whichever grew more)")
    print(f"{'method':17s} {'KB/image (RSS)':>15s} {'index B/image':>14s} {'features/image':>15s}")
    for method, kb, index_b, feats in summary:
        print(f"{method:17s} {kb:15.2f} {index_b:14.0f} {feats:15.1f}")


if __name__ == "__main__":
    main()
