"""Distractor sets and the datasets they extend: `oxford105k`, `paris106k` (+ Flickr100k)
and `roxford5k+r1m`, `rparis6k+r1m` (+ R1M).

A distractor set is stored once under the data root and appended to the base dataset's
database as a shared `Segment`: ground-truth indices of the base are unchanged, and a
method's per-image artifacts for the segment are cached under the segment's name, so
Flickr100k is described once for both Oxford and Paris (and R1M once for both revisited
sets).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from irbench.datasets.base import Dataset, DatasetProvider, Image, ImageList, Segment
from irbench.datasets.catalog import get_package, missing
from irbench.datasets.oxford import Oxford5k
from irbench.datasets.paris import Paris6k
from irbench.datasets.revisited import ROxford5k, RParis6k
from irbench.errors import DatasetError

SUFFIXES = (".jpg", ".jpeg")


def flickr100k_images(data_root: Path, dataset: str) -> tuple[Image, ...]:
    """Every image under `flickr100k/jpg`, sorted by relative path, ids `flickr100k/<rel>`."""
    pkg = get_package("flickr100k")
    folder = pkg.path(data_root) / "jpg"
    if not folder.is_dir():
        raise missing(pkg, data_root, f"distractor folder {folder}", dataset)
    files = sorted(p for p in folder.rglob("*")
                   if p.suffix.lower() in SUFFIXES and p.is_file() and not p.name.startswith("."))
    if not files:
        raise missing(pkg, data_root, f"images (*.jpg) in {folder}", dataset)
    return tuple(Image(id=f"flickr100k/{p.relative_to(folder).as_posix()}", path=p)
                 for p in files)


def r1m_images(data_root: Path, dataset: str, check_files: bool = True) -> tuple[Image, ...]:
    """The images of `revisitop1m.txt` (in its order) under `revisitop1m/jpg`."""
    pkg = get_package("r1m")
    base = pkg.path(data_root)
    listing = base / "revisitop1m.txt"
    if not listing.is_file():
        raise missing(pkg, data_root, f"image list {listing}", dataset)
    images = []
    for lineno, line in enumerate(listing.read_text(encoding="utf-8").splitlines(), 1):
        rel = line.strip()
        if not rel:
            continue
        if rel.startswith("/") or ".." in rel.split("/"):
            raise DatasetError(f"{listing}, line {lineno}: {rel!r} is not a relative path")
        if not rel.lower().endswith(SUFFIXES):
            rel += ".jpg"
        images.append(Image(id=f"r1m/{rel}", path=base / "jpg" / rel))
    absent = [im.path for im in images if check_files and not im.path.is_file()]
    if absent:
        raise DatasetError(
            f"dataset {dataset}: {len(absent)} of the {len(images)} images listed in {listing} "
            f"are missing, e.g. {absent[0]}. Run `bench data fetch r1m` (it resumes) or "
            f"`bench data verify r1m` for the full list.")
    return tuple(images)


def attach(base: Dataset, name: str, distractors: tuple[Image, ...], segment: str,
           version: str) -> Dataset:
    """`base` with `distractors` appended to its database as the shared segment `segment`."""
    n = len(base.database)
    old = getattr(base.database, "segments", ())
    database = ImageList(tuple(base.database) + distractors,
                         (*old, Segment(segment, n, n + len(distractors))))
    protocol = dataclasses.replace(
        base.protocol,
        description=f"{base.protocol.description}; + {len(distractors):,} distractors "
                    f"({segment})")
    return dataclasses.replace(base, name=name, version=f"{base.version}+{version}",
                               database=database, protocol=protocol)


class _WithDistractors(DatasetProvider):
    base: type[DatasetProvider]
    distractor_set = ""

    def load(self) -> Dataset:
        provider = self.base(self.config, self.data_root, self.cache_dir)
        provider.check_files = self.check_files
        base = provider.load()
        if self.distractor_set == "flickr100k":
            images = flickr100k_images(self.data_root, self.name)
        else:
            images = r1m_images(self.data_root, self.name, self.check_files)
        return attach(base, self.name, images, f"{self.distractor_set}@1", "1")


class Oxford105k(_WithDistractors):
    name = "oxford105k"
    description = "oxford5k + the 100,071 Flickr100k distractors."
    base = Oxford5k
    Config = Oxford5k.Config
    distractor_set = "flickr100k"
    packages = ("oxford5k", "flickr100k")


class Paris106k(_WithDistractors):
    name = "paris106k"
    description = "paris6k + the 100,071 Flickr100k distractors."
    base = Paris6k
    Config = Paris6k.Config
    distractor_set = "flickr100k"
    packages = ("paris6k", "flickr100k")


class ROxford5kR1M(_WithDistractors):
    name = "roxford5k+r1m"
    description = "roxford5k + the 1,001,001 R1M distractors (Easy/Medium/Hard)."
    base = ROxford5k
    Config = ROxford5k.Config
    distractor_set = "r1m"
    packages = ("oxford5k", "roxford5k", "r1m")


class RParis6kR1M(_WithDistractors):
    name = "rparis6k+r1m"
    description = "rparis6k + the 1,001,001 R1M distractors (Easy/Medium/Hard)."
    base = RParis6k
    Config = RParis6k.Config
    distractor_set = "r1m"
    packages = ("paris6k", "rparis6k", "r1m")
