"""Content-addressed on-disk cache of stage artifacts: named by a hash of what they depend on.

An artifact is a dict of numpy arrays (stored in one `.npz`, no pickle) plus JSON-able
metadata. Every write goes to a temporary file that is renamed into place, so an
interrupted run never leaves a half-written artifact that a later run would trust.
Long per-image computations are stored in shards (`map_cached`), so an interrupted
extraction resumes from the last finished shard.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from irbench.harness.config import stable_hash
from irbench.harness.progress import NULL_PROGRESS, Progress

log = logging.getLogger(__name__)

Artifact = dict[str, Any]
"""Arrays (numpy) and JSON-able values, by name."""


def default_cache_dir() -> Path:
    """`IRBENCH_CACHE`, else `$XDG_CACHE_HOME/irbench`, else `~/.cache/irbench`."""
    env = os.environ.get("IRBENCH_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "irbench"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@dataclass
class CacheEvent:
    """One lookup: which artifact, whether it was reused, and its size on disk."""

    kind: str
    key: str
    hit: bool
    bytes: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "key": self.key[:16], "hit": self.hit, "bytes": self.bytes,
                "seconds": round(self.seconds, 4)}


@dataclass
class Cache:
    """An artifact store under `root`; `enabled=False` computes everything in memory."""

    root: Path
    overwrite: bool = False
    enabled: bool = True
    events: list[CacheEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = Path(self.root).expanduser()

    def key_of(self, kind: str, key: Mapping[str, Any]) -> str:
        return stable_hash({"kind": kind, "key": dict(key)})

    def path_for(self, kind: str, key_hash: str) -> Path:
        return self.root / "artifacts" / kind.replace("/", os.sep) / key_hash[:2] / key_hash

    # -- single artifacts ------------------------------------------------------------

    def load_or_compute(self, kind: str, key: Mapping[str, Any],
                        compute: Callable[[], Artifact]) -> Artifact:
        """Return the artifact named by (kind, key), computing and storing it if absent."""
        key_hash = self.key_of(kind, key)
        start = time.perf_counter()
        if self.enabled:
            path = self.path_for(kind, key_hash)
            if not self.overwrite:
                found = _read_artifact(path)
                if found is not None:
                    log.info("reusing cached %s (%s)", kind, key_hash[:12])
                    self.events.append(CacheEvent(kind, key_hash, True, _size(path),
                                                  time.perf_counter() - start))
                    return found
        artifact = compute()
        nbytes = 0
        if self.enabled:
            path = self.path_for(kind, key_hash)
            _write_artifact(path, artifact, key={"kind": kind, **_json_key(key)})
            nbytes = _size(path)
        self.events.append(CacheEvent(kind, key_hash, False, nbytes, time.perf_counter() - start))
        return artifact

    # -- per-item computations, sharded and resumable ----------------------------------

    def map_cached(
        self,
        kind: str,
        key: Mapping[str, Any],
        items: Sequence[Any],
        compute_chunk: Callable[[Sequence[Any]], list[dict[str, np.ndarray]]],
        *,
        shard_size: int = 512,
        progress: Progress = NULL_PROGRESS,
        description: str = "",
    ) -> dict[str, np.ndarray]:
        """Apply `compute_chunk` to `items` in shards and concatenate the results.

        `compute_chunk(items)` returns one dict of arrays per item; arrays of one name are
        concatenated along their first axis over all items, and `offsets` (int64, n+1)
        gives each item's rows. Finished shards are stored as they complete, so an
        interrupted run resumes where it stopped. `key` must identify the items' content.
        """
        key_hash = self.key_of(kind, key)
        start = time.perf_counter()
        final_path = self.path_for(kind, key_hash)
        if self.enabled and not self.overwrite:
            found = _read_artifact(final_path)
            if found is not None:
                log.info("reusing cached %s (%s)", kind, key_hash[:12])
                self.events.append(CacheEvent(kind, key_hash, True, _size(final_path),
                                              time.perf_counter() - start))
                return found
        n = len(items)
        shard_dir = final_path.parent / f"{key_hash}.shards"
        shards: list[dict[str, np.ndarray]] = []
        resumed = 0
        with progress.task(description or kind, total=n) as advance:
            for begin in range(0, n, shard_size):
                end = min(n, begin + shard_size)
                shard_path = shard_dir / f"{begin:09d}-{end:09d}"
                shard = None
                if self.enabled and not self.overwrite:
                    shard = _read_artifact(shard_path)
                    if shard is not None:
                        resumed += end - begin
                if shard is None:
                    per_item = compute_chunk(items[begin:end])
                    if len(per_item) != end - begin:
                        raise RuntimeError(
                            f"{kind}: compute returned {len(per_item)} results for "
                            f"{end - begin} items"
                        )
                    shard = _concat_items(per_item)
                    if self.enabled:
                        _write_artifact(shard_path, shard, key={"kind": kind, "shard": [begin, end]})
                shards.append(shard)
                advance(end - begin)
        if resumed:
            log.info("resumed %s: %d of %d items were already computed", kind, resumed, n)
        result = _merge_shards(shards) if shards else {"offsets": np.zeros(1, np.int64)}
        nbytes = 0
        if self.enabled:
            _write_artifact(final_path, result, key={"kind": kind, **_json_key(key)})
            nbytes = _size(final_path)
            shutil.rmtree(shard_dir, ignore_errors=True)
        self.events.append(CacheEvent(kind, key_hash, False, nbytes, time.perf_counter() - start))
        return result


def _json_key(key: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(dict(key), default=str))


def _concat_items(per_item: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    names = list(per_item[0]) if per_item else []
    counts = np.array([len(next(iter(d.values()))) if d else 0 for d in per_item], np.int64)
    out: dict[str, np.ndarray] = {"offsets": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)}
    for name in names:
        out[name] = np.concatenate([np.asarray(d[name]) for d in per_item], axis=0)
    return out


def merge_artifacts(parts: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Concatenate `map_cached` results of consecutive item lists (offsets shifted);
    an empty part (only `offsets`) is skipped."""
    nonempty = [p for p in parts if len(p) > 1]
    if not nonempty:
        return {"offsets": np.zeros(1, np.int64)}
    template = nonempty[0]
    shards = [dict(p) if len(p) > 1 else
              {**{k: np.asarray(v)[:0] for k, v in template.items() if k != "offsets"},
               "offsets": np.asarray(p["offsets"])}
              for p in parts]
    return _merge_shards(shards)


def _merge_shards(shards: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    offsets = [np.zeros(1, np.int64)]
    base = 0
    for s in shards:
        offsets.append(s["offsets"][1:] + base)
        base += int(s["offsets"][-1])
    out = {"offsets": np.concatenate(offsets)}
    for name in shards[0]:
        if name != "offsets":
            out[name] = np.concatenate([s[name] for s in shards], axis=0)
    return out


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.glob("*") if p.is_file()) if path.is_dir() else 0


def _write_artifact(path: Path, artifact: Artifact, key: Mapping[str, Any]) -> None:
    """Write arrays.npz then meta.json; meta.json is written last and marks completeness."""
    arrays = {k: v for k, v in artifact.items() if isinstance(v, np.ndarray)}
    meta = {k: v for k, v in artifact.items() if not isinstance(v, np.ndarray)}
    path.mkdir(parents=True, exist_ok=True)
    (path / "meta.json").unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".arrays.", suffix=".npz", dir=path)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path / "arrays.npz")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    atomic_write_text(path / "meta.json", json.dumps({"key": dict(key), "meta": meta}, default=str))


def _read_artifact(path: Path) -> Artifact | None:
    meta_path = path / "meta.json"
    arrays_path = path / "arrays.npz"
    if not meta_path.is_file() or not arrays_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text("utf-8"))["meta"]
        with np.load(arrays_path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, KeyError) as exc:
        log.warning("ignoring unreadable cache entry %s (%s); recomputing", path, exc)
        return None
    return {**meta, **arrays}
