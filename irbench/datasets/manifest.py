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

Nothing is coerced (a wrong value would change the numbers silently): name, version,
root, paths, ids and labels are strings, a box is four finite numbers, the protocol's
flags are true or false, and unknown keys are an error. The database and the queries
must not be empty, and ids are unique in each.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
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


def _show(value: Any) -> str:
    """A value as the manifest writes it (`true`, `null`, `NaN`)."""
    return json.dumps(value, default=str)


def _keys(entry: dict[str, Any], allowed: tuple[str, ...], path: Path, where: str) -> None:
    """Unknown keys are an error: a misspelt `box` or `crop_query` would change the
    numbers silently."""
    for key in entry:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _err(path, where, f"unknown key {key!r}{hint}; allowed: {', '.join(allowed)}")


def _string(value: Any, path: Path, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise _err(path, where, f"must be a non-empty string, got {_show(value)}")
    return value


def _flag(doc: dict[str, Any], key: str, default: bool, path: Path) -> bool:
    value = doc.get(key, default)
    if not isinstance(value, bool):
        raise _err(path, f"protocol.{key}", f"must be true or false, got {_show(value)}")
    return value


def _box(value: Any, path: Path, where: str) -> tuple[float, float, float, float] | None:
    if value is None:
        return None
    if not (isinstance(value, list) and len(value) == 4
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)):
        raise _err(path, where, f"box must be [x1, y1, x2, y2], four numbers, got "
                                f"{_show(value)}")
    try:
        x1, y1, x2, y2 = (float(v) for v in value)
    except OverflowError:  # an integer too large for a float
        x1 = y1 = x2 = y2 = math.inf
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise _err(path, where, f"box {_show(value)} is not finite (NaN or infinity)")
    if x2 <= x1 or y2 <= y1:
        raise _err(path, where, f"box {value} is empty (need x2 > x1 and y2 > y1)")
    return (x1, y1, x2, y2)


IMAGE_KEYS = ("path", "id", "box", "label")
QUERY_KEYS = (*IMAGE_KEYS, "positives", "junk")
TOP_KEYS = ("name", "version", "root", "database", "queries", "train", "protocol")
PROTOCOL_KEYS = ("crop_query", "exclude_query", "precision_at", "description")


def _image(entry: Any, root: Path, path: Path, where: str,
           keys: tuple[str, ...] = IMAGE_KEYS) -> Image:
    if isinstance(entry, str):
        entry = {"path": entry}
    if not isinstance(entry, dict) or "path" not in entry:
        raise _err(path, where, f"expected a path string or an object with 'path', got "
                                f"{_show(entry)}")
    _keys(entry, keys, path, where)
    rel = _string(entry["path"], path, f"{where}.path")
    label = entry.get("label")
    return Image(id=_string(entry.get("id", rel), path, f"{where}.id"), path=root / rel,
                 box=_box(entry.get("box"), path, where),
                 label=None if label is None else _string(label, path, f"{where}.label"))


def _list(doc: dict[str, Any], key: str, path: Path, required: bool = True) -> list[Any]:
    value = doc.get(key) if required or key in doc else []
    if not isinstance(value, list):
        raise _err(path, key, "missing or not a list" if required else "not a list")
    return value


def parse_manifest(doc: Any, path: Path, version: str, options: dict[str, Any]) -> Dataset:
    """Build a Dataset from a parsed manifest; every problem names the manifest and entry.

    Nothing is coerced: names, versions, ids, paths and labels are strings, boxes four
    finite numbers, protocol flags true or false; unknown keys are an error."""
    if not isinstance(doc, dict):
        raise _err(path, "top level", "expected a JSON object")
    _keys(doc, TOP_KEYS, path, "top level")
    db_entries = _list(doc, "database", path)
    query_entries = _list(doc, "queries", path)
    train_entries = _list(doc, "train", path, required=False)
    if not db_entries:
        raise _err(path, "database", "the database is empty; list at least one image")
    if not query_entries:
        raise _err(path, "queries", "the manifest has no queries; list at least one")
    name = _string(doc["name"], path, "name") if "name" in doc else path.stem
    if "version" in doc:
        if isinstance(doc["version"], int | float) and not isinstance(doc["version"], bool):
            raise _err(path, "version", f"must be a string: write \"{doc['version']}\", "
                                        f"not {doc['version']}")
        version = _string(doc["version"], path, "version")
    root = (path.parent / _string(doc.get("root", "."), path, "root")).resolve()
    database = tuple(_image(e, root, path, f"database[{i}]") for i, e in enumerate(db_entries))
    index: dict[str, int] = {}
    for i, im in enumerate(database):
        if im.id in index:
            raise _err(path, f"database[{i}]", f"duplicate id {im.id!r} (also "
                                               f"database[{index[im.id]}])")
        index[im.id] = i
    train = tuple(_image(e, root, path, f"train[{i}]") for i, e in enumerate(train_entries))
    proto_doc = doc.get("protocol", {})
    if not isinstance(proto_doc, dict):
        raise _err(path, "protocol", "expected an object")
    _keys(proto_doc, PROTOCOL_KEYS, path, "protocol")
    crop = _flag(proto_doc, "crop_query", False, path)
    queries, truth = [], []
    seen: dict[str, int] = {}
    for i, q in enumerate(query_entries):
        where = f"queries[{i}]"
        im = _image(q, root, path, where, QUERY_KEYS)
        if im.id in seen:
            raise _err(path, where, f"duplicate id {im.id!r} (also queries[{seen[im.id]}]); "
                                    "give each query its own id")
        seen[im.id] = i
        sets = {}
        for key in ("positives", "junk"):
            names = q.get(key, []) if isinstance(q, dict) else []
            if not isinstance(names, list):
                raise _err(path, where, f"{key} must be a list of database ids")
            for j, n in enumerate(names):
                if not isinstance(n, str):
                    raise _err(path, f"{where}.{key}[{j}]",
                               f"must be a database id (a string), got {_show(n)}")
            missing = [n for n in names if n not in index]
            if missing:
                raise _err(path, where, f"{key} name images not in the database: "
                                        f"{', '.join(missing[:5])}")
            sets[key] = [index[n] for n in names]
        queries.append(Query(id=im.id, path=im.path, box=im.box, crop=crop and im.box is not None,
                             db_index=index.get(im.id), label=im.label))
        truth.append(QueryTruth(**sets))
    any_in_db = any(q.db_index is not None for q in queries)
    precision_at = proto_doc.get("precision_at", [1, 5, 10])
    if not (isinstance(precision_at, list)
            and all(isinstance(k, int) and not isinstance(k, bool) and k > 0
                    for k in precision_at)):
        raise _err(path, "protocol.precision_at", "must be a list of positive integers")
    description = proto_doc.get("description", f"from manifest {path.name}")
    protocol = Protocol(
        precision_at=tuple(precision_at),
        crop_query=crop,
        exclude_query=_flag(proto_doc, "exclude_query", any_in_db, path),
        description=_string(description, path, "protocol.description"),
    )
    return Dataset(name=name, version=version,
                   database=database, queries=tuple(queries), ground_truth=tuple(truth),
                   protocol=protocol, train=train, root=root, config=options)
