"""The cost of the 15-point DR-CNN sweep (regions 1..5 x fusion concat/mean/max) over
the cost of one K=5 run, both from a cold region cache (the detector is trained once,
before either is timed): the sweep detects and describes regions once and only fuses 15
times, so the ratio should stay near 1 (goal: at most 1.2).

Run: python benchmarks/bench_drcnn_sweep.py [--objects 6]

Uses efficientnet-lite0 (real ImageNet weights) with CPU-sized detector settings on a
generated `demo` set; medians are not needed here (one cold run each), but both
measurements come from this one process.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from irbench.datasets.registry import load_dataset
from irbench.harness.runner import RunOptions, run, sweep

FAST = {"backbone": "efficientnet-lite0", "min_size": 240, "max_size": 320,
        "rpn_pre_nms_top_n_train": 600, "rpn_post_nms_top_n_train": 300,
        "rpn_pre_nms_top_n_test": 600, "rpn_post_nms_top_n_test": 300,
        "anchor_sizes": (64, 128, 256), "box_batch_size_per_image": 128,
        "detector_iterations": 36, "detector_learning_rate": 0.01}


def _cold(cache: Path) -> None:
    for kind in ("drcnn/regions", "rankings"):
        shutil.rmtree(cache / "artifacts" / kind, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=6)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        ds = load_dataset("demo", cache_dir=cache, options={"objects": args.objects})
        opts = RunOptions(cache_dir=cache, results_dir=None)
        run("drcnn", ds, opts, {**FAST, "regions": 5})  # trains the detector (not timed)
        _cold(cache)
        start = time.perf_counter()
        run("drcnn", ds, opts, {**FAST, "regions": 5})
        single = time.perf_counter() - start
        _cold(cache)
        start = time.perf_counter()
        records = sweep("drcnn", ds, {"regions": [str(k) for k in range(1, 6)],
                                      "fusion": ["concat", "mean", "max"]}, opts, FAST)
        full = time.perf_counter() - start
    print(f"demo ({len(ds.database)} database images, {len(ds.queries)} queries), "
          f"efficientnet-lite0, detector trained beforehand")
    print(f"one K=5 run from a cold region cache: {single:.1f} s")
    print(f"15-point sweep ({len(records)} records) from a cold region cache: {full:.1f} s")
    print(f"sweep / single = {full / single:.2f} (goal: <= 1.2)")


if __name__ == "__main__":
    main()
