"""Vocabulary training and quantization: exact (flat L2) against HNSW assignment
(`irbench.methods.sift.vocabulary`, `kmeans_assignment=exact|hnsw`).

In one run, on the same synthetic SIFT-like data (uint8-range vectors drawn around
`--clusters` centres, L2-normalized like RootSIFT), it trains a `--words`-word vocabulary
both ways (`--iterations` Lloyd iterations, the same seed) and quantizes `--queries`
vectors with each. Prints the median wall time of `--repeats` runs of each, the ratio
exact / hnsw, and how many quantized words HNSW gets right: against the exact nearest
centroid of the HNSW-trained vocabulary, and the k-means objective (mean squared
distance to the assigned centroid) of both vocabularies.

Run: python benchmarks/bench_vocabulary.py [--points 200000] [--words 20000]
        [--iterations 5] [--queries 200000] [--repeats 1]
"""

from __future__ import annotations

import argparse
import platform

import numpy as np
from bench_invfile import timed  # the benchmarks' shared median-of-repeats timer

from irbench.methods.sift.vocabulary import Vocabulary, train_kmeans


def data(n: int, clusters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.gamma(0.6, 20.0, size=(clusters, 128)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + rng.normal(0, 6.0, (n, 128)).astype(
        np.float32)
    np.maximum(x, 0, out=x)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x


def objective(x: np.ndarray, centroids: np.ndarray, words: np.ndarray) -> float:
    return float(((x - centroids[words.astype(np.int64)]) ** 2).sum(axis=1).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", type=int, default=200_000)
    ap.add_argument("--clusters", type=int, default=5_000)
    ap.add_argument("--words", type=int, default=20_000)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--queries", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    x = data(args.points, args.clusters, 0)
    q = data(args.queries, args.clusters, 1)
    print(f"machine: {platform.processor() or platform.machine()}; {args.points} training "
          f"vectors, {args.words} words, {args.iterations} iterations, {args.queries} "
          f"quantized; medians of {args.repeats}")
    results = {}
    for name, hnsw in (("exact", False), ("hnsw", True)):
        t_train, c = timed(lambda h=hnsw: train_kmeans(x, args.words, niter=args.iterations,
                                                       seed=0, hnsw=h), args.repeats)
        vocab = Vocabulary(c, hnsw=hnsw)
        t_quant, words = timed(lambda v=vocab: v.quantize(q), args.repeats)
        results[name] = (t_train, t_quant, c, words)
        print(f"{name:6s} train {t_train:8.2f} s   quantize {t_quant:7.2f} s   "
              f"objective {objective(q, c, words):.5f}")
    te, qe = results["exact"][:2]
    th, qh, ch, wh = results["hnsw"]
    exact_words = Vocabulary(ch).quantize(q)
    print(f"ratio exact / hnsw: training {te / th:.2f}x, quantization {qe / qh:.2f}x")
    print(f"hnsw quantization equal to the exact nearest centroid: "
          f"{100 * (exact_words == wh).mean():.2f}%")


if __name__ == "__main__":
    main()
