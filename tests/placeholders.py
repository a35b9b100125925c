"""Placeholder images for loader tests: the official ground truth with made-up pixels."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from tests.conftest import OFFICIAL


def jpeg_bytes(seed: int, width: int = 96, height: int = 72, cells: int = 12) -> bytes:
    """A JPEG of `cells` x `cells` random blocks, different for every seed (SIFT finds
    keypoints at the block corners)."""
    rng = np.random.default_rng(seed)
    img = cv2.resize(rng.integers(0, 255, (cells, cells, 3), dtype=np.uint8),
                     (width, height), interpolation=cv2.INTER_NEAREST)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes()


def write_images(paths: Iterable[Path], distinct: bool = False, size: int = 96) -> None:
    same = jpeg_bytes(0, size, size * 3 // 4)
    for i, path in enumerate(paths):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg_bytes(i, size, size) if distinct else same)


def oxford_names(gt: Path) -> set[str]:
    names = set()
    for f in gt.glob("*_query.txt"):
        names.add(f.read_text().split()[0].removeprefix("oxc1_"))
    for kind in ("good", "ok", "junk"):
        for f in gt.glob(f"*_{kind}.txt"):
            names.update(x.strip() for x in f.read_text().splitlines() if x.strip())
    return names


def make_oxford(root: Path, extra: int = 5, distinct: bool = False, size: int = 96) -> Path:
    """`root/oxford5k/{gt,jpg}`: the official gt files and one image per name they use
    (query images `size` x `size` pixels, their boxes need 1024; others at most 256)."""
    base = root / "oxford5k"
    shutil.copytree(OFFICIAL / "oxford5k_gt", base / "gt")
    names = sorted(oxford_names(base / "gt")) + [f"extra_{i:06d}" for i in range(extra)]
    queries = {f.read_text().split()[0].removeprefix("oxc1_")
               for f in (base / "gt").glob("*_query.txt")}
    for i, n in enumerate(names):  # query images big enough for their boxes, others small
        side = size if n in queries else min(size, 256)
        (base / "jpg" / f"{n}.jpg").parent.mkdir(parents=True, exist_ok=True)
        (base / "jpg" / f"{n}.jpg").write_bytes(
            jpeg_bytes(i, side, side) if distinct else jpeg_bytes(0, side, side))
    return root


def make_instre(root: Path) -> Path:
    """`root/instre`: gnd_instre.mat and a placeholder (+ box file) for every image."""
    import scipy.io

    base = root / "instre"
    base.mkdir(parents=True)
    shutil.copy(OFFICIAL / "instre" / "gnd_instre.mat", base / "gnd_instre.mat")
    mat = scipy.io.loadmat(base / "gnd_instre.mat")
    paths = [str(x[0]) for x in mat["imlist"][0]] + [str(x[0]) for x in mat["qimlist"][0]]
    same = jpeg_bytes(0)
    for i, p in enumerate(paths):
        f = base / p
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(same)
        f.with_suffix(".txt").write_text(f"{i % 50} {i % 40} {100 + i % 7} 80\n")
    return root
