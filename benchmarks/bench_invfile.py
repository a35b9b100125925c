"""Benchmark: tf-idf scoring with the CSR inverted file vs. naive implementations.

Builds a synthetic bag-of-words database (default 20,000 images x 300 features, a
20,000-word vocabulary, word frequencies following a mild power law as real visual
words do) and scores 100 queries with

- `csr-scan`   `TfIdfIndex.scores`: gathers only the queries' posting lists and
               accumulates with one `np.bincount` (what `bow` uses);
- `scipy-full` a scipy CSR matrix of all database BoW vectors times each dense query
               vector (every posting of the database is touched per query);
- `scipy-spgemm` one sparse-sparse product Q @ D^T (scipy's C++ SpGEMM);
- `python-dict` a dict-of-lists inverted file scanned in Python.

All four must give the same scores (asserted, atol 1e-5); prints the median time of
each over the repeats and its ratio to `csr-scan`.

    python benchmarks/bench_invfile.py [--images 20000] [--words 300] [--vocab 20000]

With `--build-memory`, instead: the memory of building a HE+WGC index
(`HammingIndex`) of a synthetic database (default 100,000 images x 155 features, the
per-feature words uint32, signatures uint64 and angle / scale codes uint8 given as
memory-mapped `.npy` files), by the former in-memory build (one global `np.lexsort`
over int64 copies, every column gathered) and by the streaming build into a folder of
`.npy` files (two passes, counting sort; `HammingIndex.build(..., folder=...)`). Each
runs in a fresh subprocess, which reports its peak resident memory (VmHWM, and its
resident memory after the imports and before the build), the build's seconds and
a checksum of the built arrays (they must agree); prints both, their ratios and the
bytes per posting on disk.

    python benchmarks/bench_invfile.py --build-memory [--images 100000] [--words 155]
        [--builds in-memory streaming]

(from a checkout, `PYTHONPATH=.` runs its irbench rather than an installed one)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from irbench.core.cache import iter_blocks, release_pages
from irbench.methods.sift.hamming import HammingIndex
from irbench.methods.sift.invfile import TfIdfIndex


def synthetic(rng: np.random.Generator, n: int, per_image: int, vocab: int, skew: float
              ) -> tuple[np.ndarray, np.ndarray]:
    """Words of `n` images with `per_image` features each; P(word of rank r) ~ (r + 50)^-skew."""
    p = (np.arange(vocab) + 50.0) ** -skew
    p /= p.sum()
    perm = rng.permutation(vocab)  # frequent words spread over the id range
    words = perm[rng.choice(vocab, size=n * per_image, p=p)].astype(np.uint32)
    offsets = np.arange(n + 1, dtype=np.int64) * per_image
    return words, offsets


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


# -- build memory ---------------------------------------------------------------------------

INPUTS = {"words": np.uint32, "signatures": np.uint64, "angles": np.uint8, "scales": np.uint8}


in_memory_build = HammingIndex.build_reference
"""The former in-memory build (a global lexsort of every posting)."""


def write_inputs(folder: Path, rng: np.random.Generator, n: int, per_image: int, vocab: int,
                 skew: float, chunk_images: int = 10_000) -> None:
    """The per-feature arrays of a synthetic database as `.npy` files, written a chunk of
    images at a time (words as in `synthetic`; random signatures and codes)."""
    f = n * per_image
    out = {name: np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=dtype,
                                           shape=(f,)) for name, dtype in INPUTS.items()}
    for begin in range(0, n, chunk_images):
        m = min(chunk_images, n - begin)
        lo, hi = begin * per_image, (begin + m) * per_image
        out["words"][lo:hi] = synthetic(rng, m, per_image, vocab, skew)[0]
        out["signatures"][lo:hi] = rng.integers(0, 2**63, hi - lo, dtype=np.int64).astype(
            np.uint64) * 2 + rng.integers(0, 2, hi - lo).astype(np.uint64)
        out["angles"][lo:hi] = rng.integers(0, 256, hi - lo).astype(np.uint8)
        out["scales"][lo:hi] = rng.integers(0, 256, hi - lo).astype(np.uint8)
    for array in out.values():
        array.flush()
        release_pages(array)
    np.save(folder / "offsets.npy", np.arange(n + 1, dtype=np.int64) * per_image)


def digest(index: HammingIndex) -> str:
    """SHA-256 of every array of the index, read in blocks."""
    h = hashlib.sha256()
    for name, array in sorted(index.arrays().items()):
        h.update(name.encode())
        for block in iter_blocks(array, 1 << 20):
            h.update(block.tobytes())
    return h.hexdigest()


def memory_status() -> tuple[int, int]:
    """(resident bytes now, peak resident bytes) of this process: VmRSS and VmHWM of
    /proc/self/status, which (unlike `ru_maxrss`, which keeps the peak of the process
    before its `exec`: the parent's, when forked) count this program only."""
    fields = dict(line.split(":", 1) for line in
                  Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return (int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024)


def build_child(kind: str, inputs: Path, out: Path, vocab: int) -> None:
    """Run in a subprocess: build the index from the mapped inputs, print a JSON line."""
    rss_before = memory_status()[0]
    arrays = {name: np.load(inputs / f"{name}.npy", mmap_mode="r") for name in INPUTS}
    offsets = np.load(inputs / "offsets.npy")
    t = time.perf_counter()
    if kind == "in-memory":
        index = in_memory_build(arrays["words"], offsets, vocab, arrays["signatures"],
                                arrays["angles"], arrays["scales"])
    else:
        index = HammingIndex.build(arrays["words"], offsets, vocab, arrays["signatures"],
                                   arrays["angles"], arrays["scales"], folder=out)
    seconds = time.perf_counter() - t
    peak = memory_status()[1]
    disk = sum(p.stat().st_size for p in out.iterdir()) if kind == "streaming" else 0
    print(json.dumps({"kind": kind, "seconds": seconds, "peak_rss": peak,
                      "rss_before": rss_before, "postings": index.invfile.n_postings,
                      "nbytes": index.nbytes, "disk_bytes": disk, "digest": digest(index)}))


def build_memory(args: argparse.Namespace) -> None:
    cpu = next((line.split(":", 1)[1].strip() for line in subprocess.run(
        ["lscpu"], capture_output=True, text=True).stdout.splitlines()
        if line.startswith("Model name")), "unknown CPU")
    work = Path(tempfile.mkdtemp(prefix="bench-invfile-", dir=args.workdir))
    try:
        inputs, out = work / "inputs", work / "index"
        inputs.mkdir()
        out.mkdir()
        t = time.perf_counter()
        write_inputs(inputs, np.random.default_rng(args.seed), args.images, args.words,
                     args.vocab, args.skew)
        f = args.images * args.words
        input_mib = sum(p.stat().st_size for p in inputs.iterdir()) / 2**20
        print(f"database: {args.images} images x {args.words} features = {f} postings, "
              f"vocabulary {args.vocab}; inputs {input_mib:.0f} MiB of memory-mapped .npy "
              f"(written in {time.perf_counter() - t:.1f} s); CPU: {cpu}")
        rows = {}
        for kind in args.builds:
            done = subprocess.run([sys.executable, __file__, "--child", kind, "--inputs",
                                   str(inputs), "--out", str(out), "--vocab", str(args.vocab)],
                                  capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"the {kind} build failed:\n{done.stderr}")
            rows[kind] = json.loads(done.stdout.strip().splitlines()[-1])
        if len({r["digest"] for r in rows.values()}) > 1:
            raise SystemExit("the two builds differ")
        print(f"{'build':<10} {'seconds':>8} {'peak RSS MiB':>13} {'of which build':>15} "
              f"{'B/image':>9} {'B/posting':>10}   index: {'MiB':>5} {'B/posting':>10}")
        for kind, r in rows.items():
            grown = r["peak_rss"] - r["rss_before"]
            size = r["disk_bytes"] or r["nbytes"]
            where = "on disk" if r["disk_bytes"] else "in RAM"
            print(f"{kind:<10} {r['seconds']:>8.2f} {r['peak_rss'] / 2**20:>13.1f} "
                  f"{grown / 2**20:>15.1f} {grown / args.images:>9.0f} {grown / f:>10.1f}   "
                  f"{where:>7} {size / 2**20:>5.0f} {size / r['postings']:>10.2f}")
        if set(rows) != {"in-memory", "streaming"}:
            return
        old, new = rows["in-memory"], rows["streaming"]
        print(f"ratios in-memory / streaming: peak RSS {old['peak_rss'] / new['peak_rss']:.1f}x, "
              f"RSS grown by the build "
              f"{(old['peak_rss'] - old['rss_before']) / (new['peak_rss'] - new['rss_before']):.1f}x,"
              f" seconds {old['seconds'] / new['seconds']:.2f}x")
        print(f"both builds' arrays equal (SHA-256 {new['digest'][:12]})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=None,
                    help="database images (default 20,000; 100,000 with --build-memory)")
    ap.add_argument("--words", type=int, default=None,
                    help="features per image and query (default 300; 155 with --build-memory)")
    ap.add_argument("--vocab", type=int, default=20_000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--skew", type=float, default=0.8, help="power-law exponent of word frequency")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dict-repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--build-memory", action="store_true",
                    help="measure the memory of building a HE index (module doc)")
    ap.add_argument("--workdir", default=None, help="where --build-memory writes its files")
    ap.add_argument("--builds", nargs="+", choices=("in-memory", "streaming"),
                    default=["in-memory", "streaming"], help="the builds --build-memory runs")
    ap.add_argument("--child", choices=("in-memory", "streaming"), help=argparse.SUPPRESS)
    ap.add_argument("--inputs", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        build_child(args.child, args.inputs, args.out, args.vocab)
        return
    if args.build_memory:
        args.images = args.images or 100_000
        args.words = args.words or 155
        build_memory(args)
        return
    args.images = args.images or 20_000
    args.words = args.words or 300

    rng = np.random.default_rng(args.seed)
    words, offsets = synthetic(rng, args.images, args.words, args.vocab, args.skew)
    qwords, qoffsets = synthetic(rng, args.queries, args.words, args.vocab, args.skew)

    t = time.perf_counter()
    index = TfIdfIndex.build(words, offsets, args.vocab)
    build_s = time.perf_counter() - t
    inv = index.invfile
    n, nq, V = args.images, args.queries, args.vocab
    print(f"database: {n} images x {args.words} features, vocabulary {V}, "
          f"{inv.n_postings} postings, index {index.nbytes / 2**20:.1f} MiB, "
          f"built in {build_s:.2f} s")

    weight = inv.columns["weight"].astype(np.float64)
    db = sp.csr_matrix((weight, (inv.image_ids.astype(np.int64), inv.word_of_posting())),
                       shape=(n, V))
    query, qword, qweight = index.query_vectors(qwords, qoffsets)
    touched = int(inv.list_lengths()[qword].sum())
    print(f"queries: {nq}, {len(qword)} distinct (query, word) pairs, "
          f"{touched} postings scanned by csr-scan ({touched / nq / inv.n_postings:.1%} of the "
          f"file per query)")

    def csr_scan() -> np.ndarray:
        return index.scores(qwords, qoffsets)

    def scipy_full() -> np.ndarray:
        qv = index.query_vectors(qwords, qoffsets)
        out = np.empty((nq, n), np.float32)
        for i in range(nq):
            sel = qv[0] == i
            dense_q = np.zeros(V)
            dense_q[qv[1][sel]] = qv[2][sel]
            out[i] = db @ dense_q
        return out

    def scipy_spgemm() -> np.ndarray:
        qv = index.query_vectors(qwords, qoffsets)
        qm = sp.csr_matrix((qv[2], (qv[0], qv[1])), shape=(nq, V))
        return (qm @ db.T).toarray().astype(np.float32)

    lists: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for w, img, x in zip(inv.word_of_posting().tolist(), inv.image_ids.tolist(),
                         weight.tolist(), strict=True):
        lists[w].append((img, x))

    def python_dict() -> np.ndarray:
        qv = index.query_vectors(qwords, qoffsets)
        out = np.zeros((nq, n), np.float32)
        for i, w, qx in zip(qv[0].tolist(), qv[1].tolist(), qv[2].tolist(), strict=True):
            acc = defaultdict(float)
            for img, x in lists[w]:
                acc[img] += qx * x
            row = out[i]
            for img, s in acc.items():
                row[img] += s
        return out

    results = {}
    for name, fn, reps in (("csr-scan", csr_scan, args.repeats),
                           ("scipy-full", scipy_full, args.repeats),
                           ("scipy-spgemm", scipy_spgemm, args.repeats),
                           ("python-dict", python_dict, args.dict_repeats)):
        results[name] = timed(fn, reps)

    ref = results["csr-scan"][1]
    for name, (_, out) in results.items():
        np.testing.assert_allclose(out, ref, atol=1e-5, err_msg=name)
    base = results["csr-scan"][0]
    print(f"{'implementation':<14} {'median s':>10} {'ms/query':>9} {'x csr-scan':>11}")
    for name, (sec, _) in results.items():
        print(f"{name:<14} {sec:>10.4f} {1000 * sec / nq:>9.2f} {sec / base:>11.1f}")
    t = time.perf_counter()
    index.search(qwords, qoffsets, 100)
    print(f"csr-scan + top-100 (TfIdfIndex.search): {time.perf_counter() - t:.4f} s; "
          "scores equal across implementations (atol 1e-5)")


if __name__ == "__main__":
    main()
