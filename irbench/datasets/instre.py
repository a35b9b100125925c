"""INSTRE (`instre`, the standard protocol) and INSTRE-S (`instre-s`, the seed paper's set).

INSTRE (Wang and Jiang, ACM TOMM 2015) with the protocol of Iscen et al. (CVPR 2017),
read from `gnd_instre.mat`: `imlist` (27,293 database paths such as
`INSTRE-S1/01a_canada_book/001.jpg`), `qimlist` (1,250 query paths, none in the
database), `gnd[i].ok` (1-based indices into `imlist`: every image of the query's
object) and `gnd[i].bbx` (x1 y1 x2 y2, pixels). No junk. Queries are cropped to their
box by default (`crop_queries`).

INSTRE-S (Mei et al. 2018, Sec. 4.1 and 4.4): the single-object subsets INSTRE-S1 and
INSTRE-S2, 200 classes (an image's class is its folder), 23,070 images of which the
standard protocol's 1,000 S1/S2 queries are queries and the other 22,070 the database;
positives are the query's `ok` images inside that database. Train split (used to
fine-tune Faster R-CNN and F-CNN): `train_per_class` = 75 images drawn at random from
each class's database images, with their boxes; the paper leaves the draw open, so it
is `numpy.random.default_rng(train_seed)` choosing without replacement, class by
class in sorted class order, `train_seed` = 0 by default. The train images stay in the
database, as the paper's counts imply (22,070 database images with 15,000 train
images among them); `exclude_train=true` removes them (and their ground-truth entries).

Per-image boxes come from the `<nnn>.txt` file beside each image: one `x y w h` line per
appearance of the object; with several lines the box is their union.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from irbench.core.config import param
from irbench.datasets.base import Box, Dataset, DatasetProvider, Image, Protocol, Query, QueryTruth
from irbench.datasets.catalog import get_package, missing
from irbench.errors import DatasetError

SINGLE_OBJECT = ("INSTRE-S1", "INSTRE-S2")


@dataclass(frozen=True)
class InstreGnd:
    imlist: list[str]
    qimlist: list[str]
    ok: list[np.ndarray]
    """0-based database indices per query."""
    bbx: list[Box]


def read_gnd_instre(path: Path) -> InstreGnd:
    """`gnd_instre.mat` checked against its documented schema; `ok` converted to 0-based."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(path)
    except FileNotFoundError:
        raise
    except Exception as exc:  # scipy raises several types for a bad file
        raise DatasetError(f"{path}: not a readable MATLAB file ({exc})") from exc
    for key in ("imlist", "qimlist", "gnd"):
        if key not in mat:
            raise DatasetError(f"{path}: variable {key!r} is missing")
    try:
        imlist = [str(np.asarray(x).reshape(-1)[0]) for x in mat["imlist"].reshape(-1)]
        qimlist = [str(np.asarray(x).reshape(-1)[0]) for x in mat["qimlist"].reshape(-1)]
    except (IndexError, ValueError) as exc:
        raise DatasetError(f"{path}: imlist / qimlist are not cell arrays of paths") from exc
    gnd = mat["gnd"].reshape(-1)
    if len(gnd) != len(qimlist):
        raise DatasetError(f"{path}: {len(gnd)} gnd entries for {len(qimlist)} queries")
    names = gnd.dtype.names or ()
    if "ok" not in names or "bbx" not in names:
        raise DatasetError(f"{path}: gnd must have fields ok and bbx (has {names})")
    n = len(imlist)
    ok, bbx = [], []
    for i, g in enumerate(gnd):
        idx = np.asarray(g["ok"], dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 1 or idx.max() > n):
            raise DatasetError(f"{path}: gnd({i + 1}).ok has an index outside [1, {n}] "
                               "(1-based indices into imlist expected)")
        ok.append(np.unique(idx - 1))
        box = np.asarray(g["bbx"], dtype=np.float64).reshape(-1)
        if box.size != 4 or not (box[2] > box[0] and box[3] > box[1]):
            raise DatasetError(f"{path}: gnd({i + 1}).bbx = {box.tolist()} is not a box "
                               "[x1 y1 x2 y2]")
        bbx.append(tuple(float(v) for v in box))
    return InstreGnd(imlist, qimlist, ok, bbx)


def read_box_file(path: Path) -> Box:
    """An INSTRE box file: `x y w h` per line (pixels); several lines give their union."""
    try:
        lines = [(i, ln.split()) for i, ln in enumerate(
            path.read_text(encoding="utf-8").splitlines(), 1) if ln.strip()]
    except FileNotFoundError:
        raise DatasetError(f"{path}: box file is missing (every INSTRE image has one)") from None
    if not lines:
        raise DatasetError(f"{path}: box file is empty")
    boxes = []
    for lineno, fields in lines:
        try:
            if len(fields) != 4:
                raise ValueError
            x, y, w, h = (float(v) for v in fields)
        except ValueError:
            raise DatasetError(f"{path}, line {lineno}: expected 'x y w h', got "
                               f"{' '.join(fields)!r}") from None
        if w <= 0 or h <= 0:
            raise DatasetError(f"{path}, line {lineno}: empty box (w={w}, h={h})")
        boxes.append((x, y, x + w, y + h))
    arr = np.asarray(boxes)
    return (float(arr[:, 0].min()), float(arr[:, 1].min()),
            float(arr[:, 2].max()), float(arr[:, 3].max()))


def class_of(path: str) -> str:
    """`INSTRE-S1/01a_canada_book/001.jpg` -> `INSTRE-S1/01a_canada_book`."""
    return path.rsplit("/", 1)[0]


def locate(data_root: Path, dataset: str) -> tuple[Path, Path]:
    """(folder holding INSTRE-S1/S2/M, gnd_instre.mat), or the missing-data error."""
    pkg = get_package("instre")
    base = pkg.path(data_root)
    gnd = base / "gnd_instre.mat"
    if not gnd.is_file():
        raise missing(pkg, data_root, f"ground truth {gnd}", dataset)
    if (base / "INSTRE-S1").is_dir():
        return base, gnd
    for child in sorted(base.iterdir()):  # archives that wrap everything in one folder
        if (child / "INSTRE-S1").is_dir():
            return child, gnd
    raise missing(pkg, data_root, f"image folders INSTRE-S1, INSTRE-S2 in {base}", dataset)


def _check_exist(paths: Sequence[Path], where: Path, dataset: str) -> None:
    absent = [p for p in paths if not p.is_file()]
    if absent:
        raise DatasetError(
            f"dataset {dataset}: {len(absent)} of the {len(paths)} images listed in "
            f"gnd_instre.mat are missing under {where}, e.g. {absent[0]}. Run "
            f"`bench data verify {dataset}` for the full list, `bench data fetch instre` "
            "to get them.")


@dataclass(frozen=True)
class InstreConfig:
    crop_queries: bool = param(True, "crop each query to its gnd box (the standard protocol)")


class Instre(DatasetProvider):
    name = "instre"
    description = "INSTRE, standard protocol: 27,293 images, 1,250 queries with boxes, no junk."
    Config = InstreConfig
    packages = ("instre",)

    def load(self) -> Dataset:
        base, gnd_path = locate(self.data_root, self.name)
        gnd = read_gnd_instre(gnd_path)
        database = tuple(Image(id=p, path=base / p, label=class_of(p)) for p in gnd.imlist)
        queries = tuple(Query(id=p, path=base / p, box=b, crop=self.config.crop_queries,
                              label=class_of(p)) for p, b in zip(gnd.qimlist, gnd.bbx,
                                                                 strict=True))
        if self.check_files:
            _check_exist([im.path for im in database] + [q.path for q in queries], base,
                         self.name)
        return Dataset(
            name=self.name, version="1", database=database, queries=queries,
            ground_truth=tuple(QueryTruth(positives=ok) for ok in gnd.ok),
            protocol=Protocol(crop_query=self.config.crop_queries,
                              description="gnd_instre.mat (Iscen et al.): all images of the "
                                          "query's object positive, no junk"),
            root=base, config=self.options())


@dataclass(frozen=True)
class InstreSConfig:
    crop_queries: bool = param(True, "crop each query to its gnd box")
    train_per_class: int = param(75, "train images drawn per class (the paper: 75)",
                                 minimum=0)
    train_seed: int = param(0, "seed of the train draw (numpy default_rng; the paper "
                               "does not give one)")
    exclude_train: bool = param(False, "remove the train images from the database (the "
                                       "paper's counts keep them)")


class InstreS(DatasetProvider):
    name = "instre-s"
    description = ("INSTRE-S (the seed paper's set): S1+S2, 22,070 images, 1,000 queries, "
                   "200 classes, train = 75 per class.")
    Config = InstreSConfig
    packages = ("instre",)

    def load(self) -> Dataset:
        cfg = self.config
        base, gnd_path = locate(self.data_root, self.name)
        gnd = read_gnd_instre(gnd_path)
        keep = [i for i, p in enumerate(gnd.imlist) if p.split("/", 1)[0] in SINGLE_OBJECT]
        qkeep = [i for i, p in enumerate(gnd.qimlist) if p.split("/", 1)[0] in SINGLE_OBJECT]
        paths = [gnd.imlist[i] for i in keep]
        if self.check_files:
            _check_exist([base / p for p in paths] + [base / gnd.qimlist[i] for i in qkeep],
                         base, self.name)
        train_idx = self._draw_train(paths)
        train = tuple(Image(id=paths[i], path=base / paths[i],
                            box=read_box_file((base / paths[i]).with_suffix(".txt")),
                            label=class_of(paths[i])) for i in train_idx)
        drop = set(train_idx.tolist()) if cfg.exclude_train else set()
        new_index = np.full(len(gnd.imlist), -1, np.int64)
        kept = [i for j, i in enumerate(keep) if j not in drop]
        new_index[kept] = np.arange(len(kept))
        database = tuple(Image(id=gnd.imlist[i], path=base / gnd.imlist[i],
                               label=class_of(gnd.imlist[i])) for i in kept)
        queries, truths = [], []
        for qi in qkeep:
            p = gnd.qimlist[qi]
            queries.append(Query(id=p, path=base / p, box=gnd.bbx[qi], crop=cfg.crop_queries,
                                 label=class_of(p)))
            ok = new_index[gnd.ok[qi]]
            truths.append(QueryTruth(positives=ok[ok >= 0]))
        return Dataset(
            name=self.name, version="1", database=database, queries=tuple(queries),
            ground_truth=tuple(truths),
            protocol=Protocol(crop_query=cfg.crop_queries,
                              description="INSTRE-S1+S2 with the standard gnd: same-object "
                                          "images positive, no junk"),
            train=train, root=base, config=self.options())

    def _draw_train(self, paths: list[str]) -> np.ndarray:
        """Indices (into `paths`) of `train_per_class` images per class, seeded."""
        cfg = self.config
        by_class: dict[str, list[int]] = {}
        for i, p in enumerate(paths):
            by_class.setdefault(class_of(p), []).append(i)
        rng = np.random.default_rng(cfg.train_seed)
        chosen: list[Any] = []
        for cls in sorted(by_class):
            members = by_class[cls]
            if len(members) < cfg.train_per_class:
                raise DatasetError(f"dataset {self.name}: class {cls} has {len(members)} "
                                   f"database images, fewer than train_per_class="
                                   f"{cfg.train_per_class}")
            pick = rng.choice(len(members), size=cfg.train_per_class, replace=False)
            chosen.extend(np.asarray(members)[np.sort(pick)].tolist())
        return np.asarray(chosen, dtype=np.int64)
