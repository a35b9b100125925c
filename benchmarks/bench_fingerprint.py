"""Cost of a dataset's content identity on 10,000 images (`irbench.datasets.signature`).

Compares, in one run on the same files:
  memo       the default on every run after the first: one stat per file, signatures
             read from the SQLite memo
  first      the first run (empty memo): the SHA-256 of every whole file, memo written
  verify     `bench run --verify-images`: every whole file hashed again
  head+tail  the alternative the memo replaces: size + mtime + SHA-256 of the first and
             last 64 KiB, recomputed on every run
  ids only   what the identity used to cover (ids, boxes, labels; no file is touched)

The files are random scan data between a JPEG's start and end markers, of a size like
R1M's or Oxford's
(`--kib`, default 120), written to a temporary folder just before: the page cache is
warm, so the hashing runs read from memory (a cold disk adds its read time to `first`,
`verify` and `head+tail` alike, and nothing to `memo`). Medians of `--repeats` runs.

Run: python benchmarks/bench_fingerprint.py [--images 10000] [--kib 120] [--repeats 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from irbench.datasets.base import Image
from irbench.datasets.signature import ImageSigner

HEAD_TAIL = 64 << 10


SCAN_HEADER = b"\xff\xd8" + b"\xff\xda\x00\x0c" + bytes(10)
"""Start of image, then a start-of-scan segment: the structure the signer checks."""


def make_files(folder: Path, n: int, kib: int, seed: int = 0) -> list[Image]:
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        size = int(rng.integers(kib * 512, kib * 1536))  # kib on average, +-50 %
        path = folder / f"{i // 1000:02d}" / f"{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        scan = rng.bytes(size - len(SCAN_HEADER) - 2).replace(b"\xff", b"\xfe")
        path.write_bytes(SCAN_HEADER + scan + b"\xff\xd9")
        images.append(Image(id=f"{i:06d}", path=path, label=str(i % 100)))
    return images


def head_tail_identity(images: list[Image]) -> str:
    """size + mtime + SHA-256 of both 64 KiB ends of every file, each run."""
    h = hashlib.sha256()
    for im in images:
        st = os.stat(im.path)
        part = hashlib.sha256()
        with open(im.path, "rb") as fh:
            part.update(fh.read(HEAD_TAIL))
            if st.st_size > 2 * HEAD_TAIL:
                fh.seek(st.st_size - HEAD_TAIL)
            part.update(fh.read(HEAD_TAIL))
        h.update(json.dumps([im.id, str(im.path), im.box, im.label, st.st_size,
                             st.st_mtime_ns, part.hexdigest()]).encode())
    return h.hexdigest()


def ids_only_identity(images: list[Image]) -> str:
    h = hashlib.sha256()
    for im in images:
        h.update(json.dumps([im.id, im.box, im.label]).encode())
    return h.hexdigest()


def median_time(fn: Callable[[], object], repeats: int,
                setup: Callable[[], None] | None = None) -> float:
    times = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--kib", type=int, default=120, help="mean file size in KiB")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="irbench-fingerprint-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        images = tuple(make_files(folder / "images", args.images, args.kib))
        total = sum(im.path.stat().st_size for im in images)
        print(f"{len(images)} files, {total / 2**20:.0f} MiB, written in "
              f"{time.perf_counter() - t0:.1f} s; median of {args.repeats} runs, warm page "
              f"cache, {os.cpu_count()} CPUs")
        memo = folder / "signatures.sqlite"

        def drop_memo() -> None:
            memo.unlink(missing_ok=True)

        first = median_time(lambda: ImageSigner(memo).identify(images), args.repeats,
                            setup=drop_memo)
        ImageSigner(memo).identify(images)  # the memo is in place from here on
        warm = median_time(lambda: ImageSigner(memo).identify(images), args.repeats)
        verify = median_time(lambda: ImageSigner(memo, verify=True).identify(images),
                             args.repeats)
        head_tail = median_time(lambda: head_tail_identity(list(images)), args.repeats)
        ids = median_time(lambda: ids_only_identity(list(images)), args.repeats)
        assert ImageSigner(memo).identify(images) == ImageSigner().identify(images)
        rows = [("memo (every later run)", warm), ("first run (hash all)", first),
                ("--verify-images", verify), ("head+tail 64 KiB, each run", head_tail),
                ("ids only (old, no content)", ids)]
        for name, seconds in rows:
            print(f"  {name:<28} {seconds:8.3f} s  {seconds / len(images) * 1e6:7.1f} us/image"
                  f"  {seconds / warm:6.1f}x memo")


if __name__ == "__main__":
    main()
