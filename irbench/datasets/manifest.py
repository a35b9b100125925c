"""`manifest:FILE.json`: a dataset described by one JSON file.

Schema (see the README, "Datasets"):

    {
      "name": "my-set",                      # optional, default: the file's stem
      "version": "1",                        # optional, default: hash of the file
      "root": "images",                      # optional, relative to the manifest's folder
      "database": ["a.jpg", {"path": "b.jpg", "id": "b", "box": [x1,y1,x2,y2], "label": "cup"}],
      "queries": [{"path": "q.jpg", "id": "q", "box": [x1,y1,x2,y2],
                   "positives": ["a.jpg"], "junk": ["b"]}],
      "train": [{"path": "t.jpg", "label": "cup", "box": [x1,y1,x2,y2]}],
      "protocol": {"crop_query": true, "exclude_query": false, "precision_at": [1,5,10]}
    }

An image entry is a path string or an object with `path` and optional `id` (default: the
path), `box` and `label`. `positives` and `junk` name database ids. A query whose id is
also a database id is in the database (`exclude_query`, default true when any query is,
keeps it from counting).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from irbench.datasets.base import Dataset, DatasetProvider, Image, Protocol, Query, QueryTruth
from irbench.errors import DatasetError


class ManifestDataset(DatasetProvider):
    name = "manifest"
    description = "A dataset described by a JSON manifest (database, queries, ground truth)."
    takes_argument = True

    def load(self) -> Dataset:
        path = Path(self.argument or "").expanduser().resolve()
        if not path.is_file():
            raise DatasetError(f"manifest {path} not found")
        raw = path.read_bytes()
        try:
            doc = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"manifest {path}: invalid JSON at line {exc.lineno}, "
                               f"column {exc.colno}: {exc.msg}") from None
        return parse_manifest(doc, path, hashlib.sha256(raw).hexdigest()[:12], self.options())


def _err(path: Path, where: str, problem: str) -> DatasetError:
    return DatasetError(f"manifest {path}: {where}: {problem}")


def _box(value: Any, path: Path, where: str) -> tuple[float, float, float, float] | None:
    if value is None:
        return None
    if not (isinstance(value, list) and len(value) == 4
            and all(isinstance(v, int | float) for v in value)):
        raise _err(path, where, f"box must be [x1, y1, x2, y2] numbers, got {value!r}")
    x1, y1, x2, y2 = (float(v) for v in value)
    if x2 <= x1 or y2 <= y1:
        raise _err(path, where, f"box {value} is empty (need x2 > x1 and y2 > y1)")
    return (x1, y1, x2, y2)


def _image(entry: Any, root: Path, path: Path, where: str) -> Image:
    if isinstance(entry, str):
        entry = {"path": entry}
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
        raise _err(path, where, f"expected a path string or an object with 'path', got {entry!r}")
    label = entry.get("label")
    return Image(id=str(entry.get("id", entry["path"])), path=root / entry["path"],
                 box=_box(entry.get("box"), path, where),
                 label=None if label is None else str(label))


def parse_manifest(doc: Any, path: Path, version: str, options: dict[str, Any]) -> Dataset:
    """Build a Dataset from a parsed manifest; every problem names the manifest and entry."""
    if not isinstance(doc, dict):
        raise _err(path, "top level", "expected a JSON object")
    for required in ("database", "queries"):
        if not isinstance(doc.get(required), list):
            raise _err(path, required, "missing or not a list")
    root = (path.parent / doc.get("root", ".")).resolve()
    database = tuple(_image(e, root, path, f"database[{i}]")
                     for i, e in enumerate(doc["database"]))
    index: dict[str, int] = {}
    for i, im in enumerate(database):
        if im.id in index:
            raise _err(path, f"database[{i}]", f"duplicate id {im.id!r}")
        index[im.id] = i
    train = tuple(_image(e, root, path, f"train[{i}]") for i, e in enumerate(doc.get("train", [])))
    proto_doc = doc.get("protocol", {})
    if not isinstance(proto_doc, dict):
        raise _err(path, "protocol", "expected an object")
    crop = bool(proto_doc.get("crop_query", False))
    queries, truth = [], []
    for i, q in enumerate(doc["queries"]):
        where = f"queries[{i}]"
        im = _image(q, root, path, where)
        sets = {}
        for key in ("positives", "junk"):
            names = q.get(key, []) if isinstance(q, dict) else []
            if not isinstance(names, list):
                raise _err(path, where, f"{key} must be a list of database ids")
            missing = [n for n in names if str(n) not in index]
            if missing:
                raise _err(path, where, f"{key} name images not in the database: "
                                        f"{', '.join(map(str, missing[:5]))}")
            sets[key] = [index[str(n)] for n in names]
        queries.append(Query(id=im.id, path=im.path, box=im.box, crop=crop and im.box is not None,
                             db_index=index.get(im.id), label=im.label))
        truth.append(QueryTruth(**sets))
    any_in_db = any(q.db_index is not None for q in queries)
    precision_at = proto_doc.get("precision_at", [1, 5, 10])
    if not (isinstance(precision_at, list) and all(isinstance(k, int) and k > 0
                                                   for k in precision_at)):
        raise _err(path, "protocol.precision_at", "must be a list of positive integers")
    protocol = Protocol(
        precision_at=tuple(precision_at),
        crop_query=crop,
        exclude_query=bool(proto_doc.get("exclude_query", any_in_db)),
        description=str(proto_doc.get("description", f"from manifest {path.name}")),
    )
    return Dataset(name=str(doc.get("name", path.stem)), version=str(doc.get("version", version)),
                   database=database, queries=tuple(queries), ground_truth=tuple(truth),
                   protocol=protocol, train=train, root=root, config=options)
