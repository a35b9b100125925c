"""Revisited Oxford and Paris (`roxford5k`, `rparis6k`): Radenović et al., CVPR 2018.

Read from the official `gnd_<name>.pkl`: `imlist` (4,993 / 6,322 database image names),
`qimlist` (70 query names, not in the database) and `gnd[i]` with `bbx` (x1 y1 x2 y2),
`easy`, `hard` and `junk` (0-based indices into `imlist`). Queries are cropped to
`bbx`. Three settings (Sec. 3 of the paper): Easy (easy positive; hard and junk ignored),
Medium (easy + hard positive; junk ignored), Hard (hard positive; easy and junk
ignored); mAP and mP@1, 5, 10 for each. The images are the original Oxford / Paris
files: stored once, under `oxford5k/jpg` / `paris6k/jpg` (or `<name>/jpg` if present).
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from irbench.datasets.base import (
    REVISITED_SETTINGS,
    Dataset,
    DatasetProvider,
    Image,
    Protocol,
    Query,
    QueryTruth,
)
from irbench.datasets.catalog import get_package, missing
from irbench.datasets.oxford import index_images
from irbench.errors import DatasetError

_ALLOWED = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("builtins", "list"), ("builtins", "dict"), ("builtins", "tuple"),
    ("collections", "OrderedDict"),
}


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a gnd file cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_gnd(path: Path) -> dict[str, Any]:
    """The revisited ground-truth pickle, checked against the documented schema."""
    try:
        with path.open("rb") as fh:
            data = _SafeUnpickler(io.BytesIO(fh.read()), encoding="latin1").load()
    except FileNotFoundError:
        raise
    except Exception as exc:  # any unpickling failure is a bad file
        raise DatasetError(f"{path}: not a readable ground-truth pickle ({exc})") from exc
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a dict with imlist, qimlist and gnd, got "
                           f"{type(data).__name__}")
    for key in ("imlist", "qimlist", "gnd"):
        if key not in data:
            raise DatasetError(f"{path}: key {key!r} is missing (has {sorted(data)})")
    imlist = [str(x) for x in data["imlist"]]
    qimlist = [str(x) for x in data["qimlist"]]
    gnd = list(data["gnd"])
    if len(gnd) != len(qimlist):
        raise DatasetError(f"{path}: {len(gnd)} gnd entries for {len(qimlist)} queries")
    n = len(imlist)
    entries = []
    for i, g in enumerate(gnd):
        if not isinstance(g, dict):
            raise DatasetError(f"{path}: gnd[{i}] is a {type(g).__name__}, not a dict")
        try:
            bbx = tuple(float(v) for v in np.asarray(g["bbx"], dtype=np.float64).reshape(-1))
        except (KeyError, ValueError, TypeError) as exc:
            raise DatasetError(f"{path}: gnd[{i}]['bbx'] is missing or not numbers") from exc
        if len(bbx) != 4 or not (bbx[2] > bbx[0] and bbx[3] > bbx[1]):
            raise DatasetError(f"{path}: gnd[{i}]['bbx'] = {bbx} is not a box x1 y1 x2 y2")
        sets = {}
        for key in ("easy", "hard", "junk"):
            try:
                idx = np.asarray(g.get(key, []), dtype=np.int64).reshape(-1)
            except (ValueError, TypeError) as exc:
                raise DatasetError(f"{path}: gnd[{i}][{key!r}] is not a list of indices") from exc
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                raise DatasetError(f"{path}: gnd[{i}][{key!r}] has an index outside "
                                   f"[0, {n}) (0-based indices into imlist expected)")
            sets[key] = idx
        entries.append({"bbx": bbx, **sets})
    return {"imlist": imlist, "qimlist": qimlist, "gnd": entries}


class _Revisited(DatasetProvider):
    images_package = ""
    version = "1"
    independent_set = ""
    """The dataset customarily used to train visual vocabularies for this one."""

    def load(self) -> Dataset:
        pkg = get_package(self.name)
        gnd_path = pkg.path(self.data_root) / f"gnd_{self.name}.pkl"
        if not gnd_path.is_file():
            raise missing(pkg, self.data_root, f"ground truth {gnd_path}", self.name)
        gnd = read_gnd(gnd_path)
        own = pkg.path(self.data_root) / "jpg"
        images_pkg = get_package(self.images_package)
        jpg = own if own.is_dir() else images_pkg.path(self.data_root) / "jpg"
        if not jpg.is_dir():
            raise missing(images_pkg, self.data_root, f"image folder {jpg}", self.name)
        files = index_images(jpg)

        def path_of(name: str, where: str) -> Path:
            stem = name[:-4] if name.lower().endswith(".jpg") else name
            if stem not in files:
                raise DatasetError(f"{gnd_path}: {where} image {name!r} is not in {jpg}")
            return files[stem]

        database = tuple(Image(id=n, path=path_of(n, "imlist")) for n in gnd["imlist"])
        queries, truths = [], []
        for name, g in zip(gnd["qimlist"], gnd["gnd"], strict=True):
            queries.append(Query(id=name, path=path_of(name, "qimlist"), box=g["bbx"],
                                 crop=True, label=name.rsplit("_", 1)[0]))
            truths.append(QueryTruth(easy=g["easy"], hard=g["hard"], junk=g["junk"]))
        return Dataset(
            name=self.name, version=self.version, database=database, queries=tuple(queries),
            ground_truth=tuple(truths),
            protocol=Protocol(
                settings=dict(REVISITED_SETTINGS), precision_at=(1, 5, 10), crop_query=True,
                description="revisited protocol: queries cropped; Easy / Medium / Hard, "
                            "mAP and mP@1,5,10"),
            root=jpg, config=self.options(), independent_set=self.independent_set)


class ROxford5k(_Revisited):
    name = "roxford5k"
    description = "Revisited Oxford: 4,993 images, 70 cropped queries, Easy/Medium/Hard."
    images_package = "oxford5k"
    packages = ("oxford5k", "roxford5k")
    independent_set = "paris6k"


class RParis6k(_Revisited):
    name = "rparis6k"
    description = "Revisited Paris: 6,322 images, 70 cropped queries, Easy/Medium/Hard."
    images_package = "paris6k"
    packages = ("paris6k", "rparis6k")
    independent_set = "oxford5k"
