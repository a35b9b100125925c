"""Content-addressed on-disk cache of stage artifacts: named by a hash of what they depend on.

An artifact is a dict of numpy arrays (one uncompressed `.npy` file each, no pickle) plus
JSON-able metadata, in one folder named by the hash of its key (`Artifact.id`). Arrays are
read back memory-mapped and read-only, so an artifact larger than memory can be used a
block at a time (`iter_blocks`); see `read_artifact` for why `.npy` files. What a key holds
is the caller's business (`irbench.methods.base.Method.cached` derives it from the
config fields of the stage, the ids of the upstream artifacts and the content identity
of the images); this module guarantees that what it serves is what was stored:

- Writes are atomic: the folder is written under a temporary name and renamed into
  place, so an interrupted run never leaves a half-written artifact a later run trusts.
- Every artifact's `meta.json` records the SHA-256 of each array (dtype, shape and
  bytes) and of the metadata, and the key hash it was stored under. A load that fails
  to parse or to verify logs one warning naming the folder, deletes it and recomputes:
  a damaged cache heals itself and never serves a wrong value nor stops a run.
- Files and folders are created with the user's umask (`tempfile` would make them
  private), so a cache or results folder can be shared.

Long per-image computations are stored in shards (`map_cached`), so an interrupted
extraction resumes from the last finished shard; unreadable images found in any shard
are reported together, once every other shard is done. The shards are then copied into
the final artifact one at a time, so no more than one shard is ever held in memory.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import mmap
import os
import shutil
import socket
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from irbench.core.arrays import concat_rows
from irbench.core.config import stable_hash
from irbench.core.executor import LOCAL, Executor
from irbench.core.progress import NULL_PROGRESS, Progress
from irbench.errors import BadImagesError, ConfigError, ImageReadError

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
"""Version of what an artifact's key means (part of every key hash: bumping it makes
every cached artifact unreachable)."""

LAYOUT_VERSION = 3
"""Layout of an artifact folder: 3 is `meta.json` + `arrays/NAME.npy`; 2 (`arrays.npz`,
written before version 3) is still read, so existing caches stay valid."""

ARRAYS_DIR = "arrays"
DROPPED = "dropped_arrays"
"""The metadata entry of an artifact some of whose arrays were deleted to save disk
(`Cache.drop_arrays`): {name: checksum of the deleted array}."""
LEGACY_ARRAYS = "arrays.npz"
_MAX_ARRAY_NAME = 200
_HASH_BLOCK = 1 << 23
"""Bytes hashed or copied per read when verifying or merging arrays (8 MiB)."""


class Artifact(dict):
    """Arrays (numpy) and JSON-able values by name, and `id`: the hash of the key the
    artifact is stored under, which downstream stages put in their own keys."""

    id: str = ""
    compute_seconds: float | None = None
    """Seconds it took to compute (artifacts it reused counted at their own computing
    time, each once, see `Cache.cost_since`); None when stored before this was recorded."""
    cost_parts: dict[str, float] | None = None
    """`compute_seconds` by artifact: {key hash: the seconds computing that artifact took
    itself} for this one and every artifact it was computed from, however indirectly, so
    that a stage reusing two of them (SIFT words and the features they came from) counts
    the shared ones once. None when stored before this was recorded (then the whole
    `compute_seconds` counts as this artifact's)."""

    def __init__(self, values: Mapping[str, Any] = (), id: str = "",
                 compute_seconds: float | None = None,
                 cost_parts: Mapping[str, float] | None = None) -> None:
        super().__init__(values)
        self.id = id
        self.compute_seconds = compute_seconds
        self.cost_parts = None if cost_parts is None else dict(cost_parts)

    def parts(self) -> dict[str, float] | None:
        """`cost_parts`, or {id: compute_seconds} for an artifact stored without them;
        None when not even `compute_seconds` is known."""
        if self.cost_parts is not None:
            return self.cost_parts
        return None if self.compute_seconds is None else {self.id: self.compute_seconds}


def default_cache_dir() -> Path:
    """`IRBENCH_CACHE`, else `$XDG_CACHE_HOME/irbench`, else `~/.cache/irbench`."""
    env = os.environ.get("IRBENCH_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "irbench"


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _read_umask()
"""The process's umask, read once at import (os.umask can only be read by setting it)."""


def _share(path: Path | str, *, folder: bool = False) -> None:
    """Give a file (0666) or folder (0777) made private by `tempfile` the umask's mode."""
    os.chmod(path, (0o777 if folder else 0o666) & ~UMASK)


@contextlib.contextmanager
def atomic_writer(path: Path | str) -> Iterator[IO[bytes]]:
    """A binary file object whose contents replace `path` atomically when the block ends
    without an exception (temporary file in the same folder, fsync, rename); the file
    gets the umask's mode."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        _share(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and a rename."""
    with atomic_writer(path) as fh:
        fh.write(data)


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@dataclass
class CacheEvent:
    """One lookup: which artifact, whether it was reused, its size on disk, the seconds
    the lookup took (loading when reused) and the seconds computing it took (now on a
    miss; when it was stored on a hit, None if unknown)."""

    kind: str
    key: str
    hit: bool
    bytes: int
    seconds: float
    compute_seconds: float | None = None
    parts: dict[str, float] | None = None
    """The artifact's `Artifact.cost_parts` (not written to run records)."""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "key": self.key[:16], "hit": self.hit, "bytes": self.bytes,
                "seconds": round(self.seconds, 4),
                "compute_seconds": _round(self.compute_seconds)}


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 4)


def _total(parts: Mapping[str, float] | None) -> float | None:
    """An artifact's `compute_seconds` from its `cost_parts`: what computing it and
    everything it was computed from took, whatever this run had computed already."""
    return None if parts is None else sum(parts.values())


@dataclass
class Cache:
    """An artifact store under `root`; `enabled=False` computes everything in memory."""

    root: Path
    overwrite: bool = False
    enabled: bool = True
    events: list[CacheEvent] = field(default_factory=list)
    fresh: set[str] = field(default_factory=set)
    """Keys of the artifacts written under `overwrite` (pass one set to the caches of
    several runs, a sweep's points): recomputed once, then reused."""

    def __post_init__(self) -> None:
        self.root = Path(self.root).expanduser()

    def key_of(self, kind: str, key: Mapping[str, Any]) -> str:
        return stable_hash({"kind": kind, "key": dict(key), "format": FORMAT_VERSION})

    def path_for(self, kind: str, key_hash: str) -> Path:
        return self.root / "artifacts" / kind.replace("/", os.sep) / key_hash[:2] / key_hash

    def _reuse(self, kind: str, key_hash: str, start: float) -> Artifact | None:
        """The stored artifact (event recorded), or None: disabled, overwrite, absent or
        damaged (then deleted, see `read_artifact`)."""
        if not self.enabled or (self.overwrite and key_hash not in self.fresh):
            return None
        path = self.path_for(kind, key_hash)
        found = read_artifact(path, key_hash)
        if found is not None:
            log.info("reusing cached %s (%s)", kind, key_hash[:12])
            self.events.append(CacheEvent(kind, key_hash, True, _size(path),
                                          time.perf_counter() - start, found.compute_seconds,
                                          found.parts()))
        return found

    def cost_since(self, first_event: int, elapsed: float) -> float | None:
        """What `elapsed` seconds of work would have cost with nothing reused: the time
        each artifact reused since event `first_event` took to load is replaced by the
        time it took to compute, itself and what it was computed from (`cost_parts`),
        each artifact once: one met earlier in the run, or already counted as part of
        another (the SIFT features of reused SIFT words), is paid for already. None when
        one of them was stored without its computing time."""
        paid = self._paid_before(first_event)
        cost = elapsed
        for event in self.events[first_event:]:
            if event.hit and event.key not in paid:
                if event.parts is None:
                    return None
                cost += sum(s for k, s in event.parts.items() if k not in paid)
                cost -= event.seconds
            paid.add(event.key)
            paid.update(event.parts or ())
        return max(0.0, cost)

    def _paid_before(self, first_event: int) -> set[str]:
        paid: set[str] = set()
        for event in self.events[:first_event]:
            paid.add(event.key)
            paid.update(event.parts or ())
        return paid

    def parts_since(self, first_event: int, key_hash: str, cost: float | None
                    ) -> dict[str, float] | None:
        """`Artifact.cost_parts` of the artifact `key_hash` computed since event
        `first_event` at `cost` (`cost_since`, which leaves out what this run paid for
        before): the parts of every artifact met since, and its own seconds, `cost` less
        the parts it paid for. None when `cost` is."""
        if cost is None:
            return None
        paid = self._paid_before(first_event)
        parts: dict[str, float] = {}
        for event in self.events[first_event:]:
            if event.parts is None:
                return None
            parts.update(event.parts)
        own = cost - sum(s for k, s in parts.items() if k not in paid)
        parts[key_hash] = round(max(0.0, own), 4)
        return parts

    # -- dropping arrays -------------------------------------------------------------

    def drop_arrays(self, kind: str, key_hash: str, names: Sequence[str]) -> int:
        """Delete the arrays `names` of a stored artifact, keeping the rest of it valid;
        returns the bytes freed (0 when it is absent or holds none of them). Its metadata
        gains `DROPPED` = {name: checksum} (the checksums of what was deleted, so a
        reader that needs them again can compute them and check it got the same
        arrays), written before the files go: a concurrent reader sees either the whole
        artifact or the artifact without them, never a damaged one."""
        path = self.path_for(kind, key_hash)
        meta_path = path / "meta.json"
        if not self.enabled or not meta_path.is_file() or not (path / ARRAYS_DIR).is_dir():
            return 0
        record = json.loads(meta_path.read_text("utf-8"))
        gone = {n: record["arrays"][n] for n in names if n in record["arrays"]}
        if not gone:
            return 0
        files = [_array_file(path, n) for n in gone]
        freed = sum(f.stat().st_size for f in files if f.exists())
        meta = dict(record["meta"])
        meta[DROPPED] = {**meta.get(DROPPED, {}), **gone}
        record.update(meta=meta, meta_sha256=_meta_checksum(meta),
                      arrays={n: c for n, c in record["arrays"].items() if n not in gone})
        atomic_write_text(meta_path, json.dumps(record, default=str))
        for f in files:
            f.unlink(missing_ok=True)
        log.info("dropped %s of cached %s (%s): %s freed", ", ".join(gone), kind,
                 key_hash[:12], _human(freed))
        return freed

    def forget(self, kind: str, key_hash: str) -> None:
        """Delete a stored artifact (the next request computes it again)."""
        _remove_folder(self.path_for(kind, key_hash))

    # -- single artifacts ------------------------------------------------------------

    def load_or_compute(self, kind: str, key: Mapping[str, Any],
                        compute: Callable[[], Mapping[str, Any]]) -> Artifact:
        """The artifact named by (kind, key), computed and stored if absent or damaged."""
        key_hash = self.key_of(kind, key)
        start = time.perf_counter()
        path = self.path_for(kind, key_hash)
        found = self._reuse(kind, key_hash, start)
        if found is not None:
            return found
        first = len(self.events)
        values = compute()
        parts = self.parts_since(first, key_hash,
                                 self.cost_since(first, time.perf_counter() - start))
        artifact = Artifact(values, key_hash, _total(parts), parts)
        nbytes = 0
        if self.enabled:
            if not write_artifact(path, artifact, key_hash, {"kind": kind, **_json_key(key)},
                                  artifact.compute_seconds, replace=self.overwrite,
                                  cost_parts=artifact.cost_parts):
                # another process stored this key first: use its copy, so that what this
                # run goes on with is what the cache holds under the key
                stored = read_artifact(path, key_hash)
                artifact = artifact if stored is None else stored
            nbytes = _size(path)
            self.fresh.add(key_hash)
        self.events.append(CacheEvent(kind, key_hash, False, nbytes, time.perf_counter() - start,
                                      artifact.compute_seconds, artifact.parts()))
        return artifact

    def load_or_write(self, kind: str, key: Mapping[str, Any],
                      write: Callable[[Path | None], Mapping[str, Any]]) -> Artifact:
        """Like `load_or_compute`, for an artifact whose arrays are too large to hold in
        memory: `write(folder)` creates them itself as `folder / "NAME.npy"` files
        (`np.lib.format.open_memmap`, filled a block at a time) and returns the
        artifact's values, those arrays mapped from their files among them; any other
        array it returns is written as `load_or_compute` writes it. `folder` is the
        arrays folder of the artifact being staged, renamed into place once the files'
        checksums are taken (read in blocks), so an interrupted write leaves nothing a
        later run trusts; it is None when the cache is disabled (the arrays then stay in
        memory). The artifact returned is the stored one, mapped read-only."""
        key_hash = self.key_of(kind, key)
        start = time.perf_counter()
        found = self._reuse(kind, key_hash, start)
        if found is not None:
            return found
        first = len(self.events)
        if not self.enabled:
            values = write(None)
            parts = self.parts_since(first, key_hash,
                                     self.cost_since(first, time.perf_counter() - start))
            artifact = Artifact(values, key_hash, _total(parts), parts)
            self.events.append(CacheEvent(kind, key_hash, False, 0,
                                          time.perf_counter() - start,
                                          artifact.compute_seconds, artifact.parts()))
            return artifact
        path = self.path_for(kind, key_hash)
        with _staged(path, key_hash, self.overwrite) as staging:
            values = dict(write(staging / ARRAYS_DIR))
            parts = self.parts_since(first, key_hash,
                                     self.cost_since(first, time.perf_counter() - start))
            compute_seconds = _total(parts)
            checksums = {}
            for name, value in values.items():
                if not isinstance(value, np.ndarray):
                    continue
                file = _array_file(staging, name)
                if not file.exists():
                    array = np.ascontiguousarray(value)
                    with _synced(file) as fh:
                        np.lib.format.write_array(fh, array, allow_pickle=False)
                    checksums[name] = array_checksum(array)
                    continue
                mapped = _memmap_of(value)
                if mapped is None or Path(mapped.filename).resolve() != file.resolve():
                    raise ValueError(f"{kind}: array {name!r} is not the one written to "
                                     f"{file.name} (return the array mapped from that file)")
                mapped.flush()
                checksums[name] = _npy_checksum(file)
            stray = {p.name for p in (staging / ARRAYS_DIR).iterdir()} - {
                _array_file(staging, name).name for name in checksums}
            if stray:
                raise ValueError(f"{kind}: files {sorted(stray)} were written but not "
                                 f"returned among the artifact's arrays")
            _write_meta(staging, values, key_hash, {"kind": kind, **_json_key(key)},
                        checksums, compute_seconds, parts)
        del values
        result = Artifact(_open_artifact(path), key_hash, compute_seconds, parts)
        self.fresh.add(key_hash)
        self.events.append(CacheEvent(kind, key_hash, False, _size(path),
                                      time.perf_counter() - start, compute_seconds,
                                      result.parts()))
        return result

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
        meta: Callable[[], Mapping[str, Any]] | None = None,
        executor: Executor = LOCAL,
    ) -> Artifact:
        """Apply `compute_chunk` to `items` in shards and concatenate the results.

        `compute_chunk(items)` returns one dict of arrays per item; arrays of one name are
        concatenated along their first axis over all items, and `offsets` (int64, n+1)
        gives each item's rows. Finished shards are stored as they complete, so an
        interrupted run resumes where it stopped. A shard that raises `ImageReadError` /
        `BadImagesError` does not stop the others: once all are done, one
        `BadImagesError` lists every unreadable image. `key` must identify the items'
        content. The bar moves once per shard, or as items finish when `compute_chunk`
        is a `WithProgress`. `meta()`, called once every shard is done, gives JSON-able
        values stored with the result.

        The shards not in the cache yet run on `executor` (`irbench.core.executor`): here
        by default, or as Ray tasks that write their shards into the cache directory,
        from which they are read back (`_compute_shards`).
        """
        key_hash = self.key_of(kind, key)
        start = time.perf_counter()
        final_path = self.path_for(kind, key_hash)
        found = self._reuse(kind, key_hash, start)
        if found is not None:
            return found
        n = len(items)
        shard_dir = final_path.parent / f"{key_hash}.shards"
        first = len(self.events)
        try:
            with progress.task(description or kind, total=n) as advance:
                shards, unreadable, resumed, compute_seconds = self._compute_shards(
                    kind, key_hash, shard_dir, items, compute_chunk, shard_size=shard_size,
                    executor=executor, advance=advance)
            if unreadable:
                raise BadImagesError.combine(unreadable)
            if resumed:
                log.info("resumed %s: %d of %d items were already computed", kind, resumed,
                         n)
            nbytes = 0
            facts = dict(meta()) if meta is not None else {}
            parts = self.parts_since(first, key_hash, compute_seconds)
            compute_seconds = _total(parts)
            if self.enabled:
                _write_concatenated(final_path, shards, key_hash,
                                    {"kind": kind, **_json_key(key)}, compute_seconds, facts,
                                    replace=self.overwrite, cost_parts=parts)
                result = Artifact(_open_artifact(final_path), key_hash, compute_seconds, parts)
                nbytes = _size(final_path)
                self.fresh.add(key_hash)
                _remove_folder(shard_dir)
            else:
                arrays = (_merge_shards([load() for load in shards]) if shards else
                          {"offsets": np.zeros(1, np.int64)})
                result = Artifact({**json.loads(json.dumps(facts, default=str)), **arrays},
                                  key_hash, compute_seconds, parts)
        except OSError:
            # Another process computing the same artifact finished first: it stored the
            # result and removed the shards folder, with shards this one was reading or
            # writing (FileNotFoundError, or another OSError of a folder gone mid-write).
            # Its result is this one's: used when it verifies; otherwise the error stands.
            found = read_artifact(final_path, key_hash) if self.enabled else None
            if found is None:
                raise
            log.info("another process finished cached %s (%s) first: using it", kind,
                     key_hash[:12])
            _remove_folder(shard_dir)
            self.events.append(CacheEvent(kind, key_hash, True, _size(final_path),
                                          time.perf_counter() - start, found.compute_seconds,
                                          found.parts()))
            return found
        self.events.append(CacheEvent(kind, key_hash, False, nbytes, time.perf_counter() - start,
                                      compute_seconds, result.parts()))
        return result

    def _compute_shards(
        self, kind: str, key_hash: str, shard_dir: Path, items: Sequence[Any],
        compute_chunk: Callable[[Sequence[Any]], list[dict[str, np.ndarray]]], *,
        shard_size: int, executor: Executor, advance: Callable[[int], None],
    ) -> tuple[list[Callable[[], Mapping[str, Any]]], list[ImageReadError | BadImagesError],
               int, float | None]:
        """(how to load each shard, in order, the unreadable-image errors, how many items
        were resumed from stored shards, the computing seconds of all shards) of
        `map_cached`: stored shards are verified, the others run on `executor` and are
        stored as they finish (by the task itself when it runs elsewhere; then verified
        here). A shard stored is loaded from its folder, so they are never all in memory."""
        n = len(items)
        found: dict[int, Callable[[], Mapping[str, Any]]] = {}
        unreadable: list[ImageReadError | BadImagesError] = []
        resumed = 0
        compute_seconds: float | None = 0.0
        todo: list[_ShardTask] = []
        # Taking a shard's items can compute what they are read from (SIFT words read
        # the SIFT features lazily): that time counts, with the artifacts it met.
        slicing_first, slicing_seconds = len(self.events), 0.0
        for index, begin in enumerate(range(0, n, shard_size)):
            end = min(n, begin + shard_size)
            shard_path = shard_dir / f"{begin:09d}-{end:09d}"
            shard_hash = stable_hash({"of": key_hash, "shard": [begin, end]})
            if self.enabled and not self.overwrite:
                shard = read_artifact(shard_path, shard_hash)
                if shard is not None:
                    found[index] = functools.partial(_open_artifact, shard_path)
                    resumed += end - begin
                    compute_seconds = _add(compute_seconds, shard.compute_seconds)
                    advance(end - begin)
                    continue
            sliced_at = time.perf_counter()
            shard_items = items[begin:end]
            slicing_seconds += time.perf_counter() - sliced_at
            todo.append(_ShardTask(index, begin, end, shard_path, shard_hash, shard_items))
        if todo:
            compute_seconds = _add(compute_seconds,
                                   self.cost_since(slicing_first, slicing_seconds))
        job = _ShardJob(kind, compute_chunk,
                        write=self.enabled and not executor.in_process,
                        advance=advance if executor.in_process else None,
                        replace=self.overwrite)
        mark = len(self.events)

        def on_done(position: int, done: _ShardDone) -> None:
            nonlocal compute_seconds, mark
            task = todo[position]
            if not executor.in_process:
                advance(task.end - task.begin)
            # cache events since the last shard are this shard's (reused artifacts count
            # at their computing time); a task elsewhere records none here
            shard_seconds = self.cost_since(mark, done.seconds)
            mark = len(self.events)
            if done.unreadable:
                unreadable.extend(done.unreadable)
                return
            compute_seconds = _add(compute_seconds, shard_seconds)
            if done.written:
                shard = read_artifact(task.path, task.key_hash)
                if shard is None:
                    raise ConfigError(
                        f"{kind}: shard {task.begin}-{task.end} was written by {executor.name}"
                        f" node {done.host} to {task.path}, but this machine "
                        f"({socket.gethostname()}) does not find it there: with --executor "
                        f"{executor.name} the cache directory must be on a filesystem every "
                        f"node shares at the same path (NFS or the like); point --cache-dir "
                        f"or IRBENCH_CACHE at one")
                found[task.index] = functools.partial(_open_artifact, task.path)
            elif self.enabled:
                write_artifact(task.path, done.arrays, task.key_hash,
                               {"kind": kind, "shard": [task.begin, task.end]}, shard_seconds,
                               replace=self.overwrite)
                found[task.index] = functools.partial(_open_artifact, task.path)
            else:
                found[task.index] = functools.partial(dict, done.arrays)

        executor.run(_run_shard, job, todo, on_done)
        shards = [found[i] for i in sorted(found)]
        return shards, unreadable, resumed, compute_seconds


@dataclass(frozen=True)
class _ShardTask:
    """One shard to compute: its position, items[begin:end] and where it is stored."""

    index: int
    begin: int
    end: int
    path: Path
    key_hash: str
    items: Sequence[Any]


@dataclass(frozen=True)
class _ShardJob:
    """What every shard of one `map_cached` call shares (an executor sends it once)."""

    kind: str
    compute_chunk: Callable[[Sequence[Any]], list[dict[str, np.ndarray]]]
    write: bool
    """The task stores its shard itself (it runs elsewhere); else it returns the arrays."""
    advance: Callable[[int], None] | None = None
    """The progress bar, for tasks that run in this process (others are counted when done)."""
    replace: bool = False
    """A shard stored meanwhile by another process is replaced (`Cache.overwrite`)."""


@dataclass
class _ShardDone:
    """What a shard task returns: its arrays (None when it stored them, or failed), the
    unreadable-image errors that failed it, its computing seconds, the host it ran on."""

    arrays: dict[str, np.ndarray] | None
    unreadable: list[ImageReadError | BadImagesError]
    seconds: float
    host: str
    written: bool


def _run_shard(job: _ShardJob, task: _ShardTask) -> _ShardDone:
    """Compute one shard (an executor's task, here or on another machine) and, when
    `job.write`, store it atomically at `task.path`."""
    start = time.perf_counter()
    per_item, failed = _compute_shard(job.kind, task.items, job.compute_chunk,
                                      job.advance or _ignore_advance)
    if failed:
        return _ShardDone(None, failed, time.perf_counter() - start, socket.gethostname(),
                          False)
    arrays = _concat_items(per_item)
    seconds = time.perf_counter() - start
    if job.write:
        write_artifact(task.path, arrays, task.key_hash,
                       {"kind": job.kind, "shard": [task.begin, task.end]}, seconds,
                       replace=job.replace)
        return _ShardDone(None, [], seconds, socket.gethostname(), True)
    return _ShardDone(arrays, [], seconds, socket.gethostname(), False)


def _ignore_advance(n: int = 1, status: str | None = None) -> None:
    """The progress of a task that runs elsewhere: the driver counts its shard when done."""

@dataclass(frozen=True)
class WithProgress:
    """A `map_cached` computation that moves the progress bar itself: `fn(items,
    advance)` calls `advance(n)` as items finish (SIFT extraction: per image, where the
    bar would otherwise move once per shard). Picklable when `fn` is."""

    fn: Callable[[Sequence[Any], Callable[..., None]], list[dict[str, np.ndarray]]]

    def __call__(self, items: Sequence[Any]) -> list[dict[str, np.ndarray]]:
        return self.fn(items, _ignore_advance)


def _compute_shard(kind: str, items: Sequence[Any],
                   compute_chunk: Callable[[Sequence[Any]], list[dict[str, np.ndarray]]],
                   advance: Callable[[int], None]
                   ) -> tuple[list[dict[str, np.ndarray]], list[Exception]]:
    """The per-item results of a shard's `items`, or the unreadable-image error that
    failed it; the bar is advanced by the items the computation did not report itself."""
    moved = 0

    def counted(n: int = 1, status: str | None = None) -> None:
        nonlocal moved
        moved += n
        advance(n)

    try:
        out = (compute_chunk.fn(items, counted) if isinstance(compute_chunk, WithProgress)
               else compute_chunk(items))
    except (ImageReadError, BadImagesError) as exc:
        out = exc
    if len(items) > moved:
        advance(len(items) - moved)
    if isinstance(out, Exception):
        return [], [out]
    if len(out) != len(items):
        raise RuntimeError(f"{kind}: compute returned {len(out)} results for "
                           f"{len(items)} items")
    return out, []


def _add(total: float | None, seconds: float | None) -> float | None:
    """A sum of computing times that is unknown as soon as one part is."""
    return None if total is None or seconds is None else total + seconds


def _json_key(key: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(dict(key), default=str))


def _concat_items(per_item: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    names = list(per_item[0]) if per_item else []
    counts = np.array([len(next(iter(d.values()))) if d else 0 for d in per_item], np.int64)
    out: dict[str, np.ndarray] = {"offsets": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)}
    for name in names:
        out[name] = np.concatenate([np.asarray(d[name]) for d in per_item], axis=0)
    return out


def merge_artifacts(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """`map_cached` results of consecutive item lists as one (offsets shifted); an empty
    part (only `offsets`) contributes no rows. The arrays are not copied: each is a
    `ConcatRows` over the parts' (memory-mapped) arrays, or the one part that has rows."""
    offsets = [np.zeros(1, np.int64)]
    for part in parts:
        offsets.append(np.asarray(part["offsets"][1:], np.int64) + int(offsets[-1][-1]))
    out: dict[str, Any] = {"offsets": np.concatenate(offsets)}
    nonempty = [p for p in parts if len(p) > 1]
    for name in (nonempty[0] if nonempty else {}):
        if name != "offsets" and isinstance(nonempty[0][name], np.ndarray):
            out[name] = concat_rows([np.asarray(p[name]) for p in nonempty])
    return out


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


def _human(n: float) -> str:
    """Bytes for a log line: '812 B', '3.4 MiB'."""
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


# -- the artifact folder -----------------------------------------------------------------


def array_checksum(array: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and bytes (C order)."""
    a = np.ascontiguousarray(array)
    h = _checksum_start(a.dtype, a.shape)
    for block in _byte_blocks(a):
        h.update(block)
    return h.hexdigest()


def _checksum_start(dtype: np.dtype, shape: tuple[int, ...]) -> Any:
    return hashlib.sha256(f"{np.dtype(dtype).str}{tuple(shape)}".encode())


def _byte_blocks(a: np.ndarray) -> Iterator[memoryview]:
    """The bytes of a C-contiguous array: whole when in memory, in blocks of about
    `_HASH_BLOCK` when memory-mapped (see `iter_blocks`)."""
    if not a.size:
        return
    if a.ndim == 0 or not _is_mapped(a):
        yield memoryview(a).cast("B")
        return
    for block in iter_blocks(a, max(1, _HASH_BLOCK // max(1, _row_bytes(a)))):
        yield memoryview(block).cast("B")


def _is_mapped(array: np.ndarray) -> bool:
    return _memmap_of(array) is not None


def _memmap_of(array: np.ndarray) -> np.memmap | None:
    """The `np.memmap` an array is a view of, if any."""
    base: Any = array
    while base is not None:
        if isinstance(base, np.memmap):
            return base
        base = getattr(base, "base", None)
    return None


def _meta_checksum(meta: Any) -> str:
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()


def _array_file(folder: Path, name: str) -> Path:
    """Where array `name` of an artifact folder is stored: `arrays/NAME.npy`, with the
    characters a file name cannot hold %-escaped (`w/mean` is `w%2Fmean.npy`)."""
    stem = urllib.parse.quote(name, safe="")
    if not name or len(stem) > _MAX_ARRAY_NAME:
        raise ValueError(f"artifact array name {name!r} cannot be a file name: it must have "
                         f"1 to {_MAX_ARRAY_NAME} characters (once %-escaped)")
    return folder / ARRAYS_DIR / f"{stem}.npy"


def write_artifact(path: Path, artifact: Mapping[str, Any], key_hash: str,
                   key: Mapping[str, Any], compute_seconds: float | None = None, *,
                   replace: bool = False,
                   cost_parts: Mapping[str, float] | None = None) -> bool:
    """Write the folder `path` (`arrays/NAME.npy` per array and meta.json with their
    checksums, and the seconds computing it took) under a temporary name, then move it
    into place: a valid copy another process stored there first is kept unless `replace`
    (`_move_into_place`). Returns whether this copy was stored."""
    arrays = {k: np.asarray(v) for k, v in artifact.items() if isinstance(v, np.ndarray)}
    staged = _staged(path, key_hash, replace)
    with staged as staging:
        checksums = {}
        for name, array in arrays.items():
            array = np.ascontiguousarray(array)
            with _synced(_array_file(staging, name)) as fh:
                np.lib.format.write_array(fh, array, allow_pickle=False)
            checksums[name] = array_checksum(array)
        _write_meta(staging, artifact, key_hash, key, checksums, compute_seconds, cost_parts)
    return staged.stored


class _staged:  # noqa: N801 - used as a context manager, like contextlib's
    """`with _staged(path, key_hash, replace) as staging:` a temporary folder beside
    `path`, moved into place (`_move_into_place`) when the block ends without an
    exception and deleted otherwise. `stored` says afterwards whether this folder is now
    at `path` (False: a copy another process stored first was kept)."""

    def __init__(self, path: Path, key_hash: str, replace: bool) -> None:
        self.path, self.key_hash, self.replace = path, key_hash, replace
        self.stored = False

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.staging = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".tmp",
                                             dir=self.path.parent))
        try:
            _share(self.staging, folder=True)
            (self.staging / ARRAYS_DIR).mkdir()
        except BaseException:
            shutil.rmtree(self.staging, ignore_errors=True)
            raise
        return self.staging

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        try:
            if exc_type is None:
                self.stored = _move_into_place(self.staging, self.path, self.key_hash,
                                               self.replace)
        finally:
            shutil.rmtree(self.staging, ignore_errors=True)


@contextlib.contextmanager
def _synced(path: Path) -> Iterator[IO[bytes]]:
    """A new file opened for writing, flushed to disk when the block ends."""
    with path.open("xb") as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())


def _write_meta(staging: Path, artifact: Mapping[str, Any], key_hash: str,
                key: Mapping[str, Any], checksums: Mapping[str, str],
                compute_seconds: float | None,
                cost_parts: Mapping[str, float] | None = None) -> None:
    meta = json.loads(json.dumps({k: v for k, v in artifact.items()
                                  if not isinstance(v, np.ndarray)}, default=str))
    record = {"format": LAYOUT_VERSION, "id": key_hash, "key": dict(key), "meta": meta,
              "meta_sha256": _meta_checksum(meta), "arrays": dict(checksums),
              "compute_seconds": _round(compute_seconds)}
    if cost_parts is not None:
        record["cost_parts"] = {k: _round(v) for k, v in cost_parts.items()}
    atomic_write_text(staging / "meta.json", json.dumps(record, default=str))


def _write_concatenated(path: Path, shards: Sequence[Callable[[], Mapping[str, Any]]],
                        key_hash: str, key: Mapping[str, Any],
                        compute_seconds: float | None,
                        meta: Mapping[str, Any] | None = None, *,
                        replace: bool = False,
                        cost_parts: Mapping[str, float] | None = None) -> None:
    """Write the artifact `path` whose arrays are the shards' arrays concatenated along
    their first axis (`offsets` shifted) and whose metadata is `meta`, reading one shard
    at a time: each of `shards` loads one (memory-mapped). Peak memory is one shard,
    whatever the total."""
    offsets = [np.zeros(1, np.int64)]
    layout: dict[str, tuple[np.dtype, tuple[int, ...], int]] = {}
    for load in shards:  # first pass: the arrays' dtypes and total lengths
        shard = load()
        offsets.append(np.asarray(shard["offsets"][1:]) + int(offsets[-1][-1]))
        for name, array in shard.items():
            if name == "offsets" or not isinstance(array, np.ndarray):
                continue
            dtype, tail, rows = layout.get(name, (array.dtype, array.shape[1:], 0))
            if (array.dtype, array.shape[1:]) != (dtype, tail):
                raise ValueError(f"{path.name}: shard array {name!r} is {array.dtype}"
                                 f"{array.shape[1:]} where earlier shards are {dtype}{tail}")
            layout[name] = (dtype, tail, rows + len(array))
        del shard
    with _staged(path, key_hash, replace) as staging:
        checksums = {}
        merged = np.concatenate(offsets)
        with _synced(_array_file(staging, "offsets")) as fh:
            np.lib.format.write_array(fh, merged, allow_pickle=False)
        checksums["offsets"] = array_checksum(merged)
        for name, (dtype, tail, rows) in layout.items():
            out = np.lib.format.open_memmap(_array_file(staging, name), mode="w+",
                                            dtype=dtype, shape=(rows, *tail))
            h, at = _checksum_start(dtype, (rows, *tail)), 0
            for load in shards:
                part = load()[name]
                for block in iter_blocks(part, max(1, _HASH_BLOCK // max(1, _row_bytes(part)))):
                    out[at:at + len(block)] = block
                    h.update(memoryview(np.ascontiguousarray(block)).cast("B"))
                    at += len(block)
                    release_pages(out)
            out.flush()
            del out
            checksums[name] = h.hexdigest()
        _write_meta(staging, dict(meta or {}), key_hash, key, checksums, compute_seconds,
                    cost_parts)


def _row_bytes(a: np.ndarray) -> int:
    return int(a.itemsize * (np.prod(a.shape[1:]) if a.ndim > 1 else 1))


def iter_blocks(array: np.ndarray, rows: int) -> Iterator[np.ndarray]:
    """`array[i:i + rows]` for i = 0, rows, ... (copies). For a memory-mapped array the
    pages of each block are released after it is copied, so walking a file larger than
    memory keeps the process's resident memory at one block."""
    rows = max(1, int(rows))
    for start in range(0, len(array), rows):
        block = np.array(array[start:start + rows])
        release_pages(array)
        yield block


def release_pages(array: Any) -> None:
    """Release the resident pages of the shared file mapping behind `array`, if any (the
    data stays in the file and the page cache and is read again when used): resident
    memory otherwise grows with every page of a mapped file ever read. Copy-on-write
    mappings (mode "c") are left alone, as dropping their pages would lose writes."""
    for part in getattr(array, "parts", ()):  # a ConcatRows
        release_pages(part)
    base: Any = array
    while base is not None and not isinstance(base, np.memmap):
        base = getattr(base, "base", None)
    handle = getattr(base, "_mmap", None)
    if base is None or base.mode == "c" or not hasattr(handle, "madvise"):
        return
    with contextlib.suppress(OSError, ValueError):
        handle.madvise(mmap.MADV_DONTNEED)


def release_rows(array: np.ndarray, begin: int, end: int) -> None:
    """`release_pages` for the pages holding rows [begin, end) of a memory-mapped array
    only (the pages at either end whole: rows beside them that share one are read again
    from the page cache when used), so that releasing a few rows of a large mapping
    costs little. Arrays not mapped, or mapped copy-on-write, are left alone."""
    base = _memmap_of(array)
    handle = getattr(base, "_mmap", None)
    if (base is None or base.mode == "c" or not hasattr(handle, "madvise") or end <= begin
            or array.ndim == 0 or array.strides[0] <= 0):
        return
    mapping_start = np.frombuffer(handle, np.uint8, count=1).ctypes.data
    lo = array.ctypes.data - mapping_start + begin * array.strides[0]
    hi = lo + (end - begin) * array.strides[0]
    lo -= lo % mmap.PAGESIZE  # madvise wants a page-aligned start; it rounds the length up
    with contextlib.suppress(OSError, ValueError):
        handle.madvise(mmap.MADV_DONTNEED, lo, min(hi, len(handle)) - lo)


def _move_into_place(staging: Path, path: Path, key_hash: str, replace: bool) -> bool:
    """Rename the folder `staging` to `path`. A valid artifact already at `path` was
    stored by another process computing the same key first (two runs sharing a cache):
    it is kept and `staging` dropped, so a folder a reader has found never changes under
    it (a shard being concatenated, say). With `replace` (`Cache.overwrite`: the user
    asked to compute again) or a damaged one, the old folder is moved aside and deleted.
    Returns whether `staging` was moved into place."""
    for _ in range(3):
        try:
            os.rename(staging, path)
            return True
        except OSError:
            if not path.exists():
                raise
            if not replace and read_artifact(path, key_hash) is not None:
                log.info("%s was stored by another process first: keeping it", path)
                return False
            _remove_folder(path)
    os.rename(staging, path)
    return True


def _remove_folder(path: Path) -> None:
    """Delete the folder `path` (if there): renamed aside first, so another process sees
    it whole or not at all, never half deleted (which it would take for damage)."""
    trash = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.old")
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def read_artifact(path: Path, key_hash: str) -> Artifact | None:
    """The artifact in folder `path`, or None when there is none. One that fails to parse
    or to verify (checksums, the key hash it was stored under) is deleted with a warning
    naming it, and None is returned: the caller recomputes it.

    Arrays come back memory-mapped and read-only: `.npy` files (rather than one `.npz`,
    zarr or HDF5) because numpy maps them with no extra dependency, a reader takes only
    the rows it touches, and a file is written and verified in blocks. The checksum of
    every array is verified by reading the file in 8 MiB blocks (never its size in
    memory) on the first load, and again on any load after the file's stat changed
    (`VERIFIED`: its size, inode, mtime and ctime). Folders of the older layout
    (`arrays.npz`) are read into memory as before.
    """
    meta_path = path / "meta.json"
    if not path.exists():
        return None
    legacy = path / LEGACY_ARRAYS
    if not meta_path.is_file() or not (legacy.is_file() or (path / ARRAYS_DIR).is_dir()):
        if not path.exists():  # renamed away meanwhile (`_remove_folder`): not damage
            return None
        # an artifact folder is renamed into place complete; a hand-damaged one is not
        return _discard(path, "incomplete (its arrays or meta.json are missing)")
    try:
        record = json.loads(meta_path.read_text("utf-8"))
        if not isinstance(record, dict):
            return _discard(path, f"meta.json holds a {type(record).__name__}, not an object")
        layout = record.get("format")
        if layout not in (FORMAT_VERSION, LAYOUT_VERSION):
            return _discard(path, f"format {layout!r}, not {LAYOUT_VERSION}")
        if record.get("id") != key_hash:
            return _discard(path, f"stored under key {str(record.get('id'))[:12]}, "
                                  f"not {key_hash[:12]}")
        meta = record["meta"]
        if not isinstance(meta, dict) or _meta_checksum(meta) != record.get("meta_sha256"):
            return _discard(path, "meta.json does not match its checksum")
        expected = record["arrays"]
        if not isinstance(expected, dict):
            return _discard(path, "meta.json's array list is not an object")
        if layout == FORMAT_VERSION:
            with np.load(legacy, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
            if set(expected) != set(arrays):
                return _discard(path, "arrays.npz holds other arrays than meta.json lists")
            for name, array in arrays.items():
                if array_checksum(array) != expected[name]:
                    return _discard(path, f"array {name!r} does not match its checksum")
        else:
            files = {p.name for p in (path / ARRAYS_DIR).iterdir()}
            dropping = meta.get(DROPPED, {}) if isinstance(meta.get(DROPPED), dict) else {}
            files -= {_array_file(path, name).name for name in dropping}  # being deleted
            if files != {_array_file(path, name).name for name in expected}:
                return _discard(path, f"{ARRAYS_DIR}/ holds other arrays than meta.json lists")
            arrays = {}
            verified = _read_verified(path)
            for name in expected:
                file = _array_file(path, name)
                if verified.get(name) != _stamp(file, expected[name]):
                    problem = _check_npy(file, expected[name])
                    if problem:
                        return _discard(path, f"array {name!r} {problem}")
                arrays[name] = _map_npy(file)
            _write_verified(path, {name: _stamp(_array_file(path, name), checksum)
                                   for name, checksum in expected.items()}, verified)
    except FileNotFoundError as exc:
        # a file went away while being read: another process is replacing or deleting
        # the folder (`_move_into_place`, a finished `map_cached`), which is not damage
        log.debug("cache entry %s changed while being read (%s)", path, exc)
        return None
    except Exception as exc:  # noqa: BLE001 - any damage means: recompute, never fail
        return _discard(path, f"{type(exc).__name__}: {exc}")
    seconds = record.get("compute_seconds")
    parts = record.get("cost_parts")
    valid_parts = isinstance(parts, dict) and all(
        isinstance(v, int | float) for v in parts.values())
    return Artifact({**meta, **arrays}, key_hash,
                    float(seconds) if isinstance(seconds, int | float) else None,
                    {str(k): float(v) for k, v in parts.items()} if valid_parts else None)


def _npy_header(fh: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(fh)
    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
            else np.lib.format.read_array_header_2_0)
    return read(fh)


VERIFIED = "verified.json"
"""An artifact's memo of its verified array files: {name: [checksum, size, inode,
mtime_ns, ctime_ns]}. A file whose stat is unchanged since its checksum was verified is
not read again (a file written to changes its mtime and ctime, and the ctime cannot be
set back), so reusing an artifact of many gigabytes costs a stat per array, not a read
of the whole artifact; a copied cache (new inodes) is verified again."""


def _stamp(file: Path, checksum: str) -> list[Any] | None:
    try:
        st = file.stat()
    except OSError:
        return None
    return [checksum, st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns]


def _read_verified(path: Path) -> dict[str, Any]:
    try:
        memo = json.loads((path / VERIFIED).read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}


def _write_verified(path: Path, stamps: dict[str, Any], old: dict[str, Any]) -> None:
    """Keep the stamps of the files just verified (best effort: a cache folder this user
    may not write to is verified in full next time, which costs time, not trust)."""
    if stamps == old:
        return
    try:
        atomic_write_text(path / VERIFIED, json.dumps(stamps))
    except OSError as exc:
        log.debug("cannot record the verification of %s: %s", path, exc)


def _check_npy(file: Path, expected: str) -> str:
    """"" when the `.npy` file's dtype, shape and data match the checksum `expected`
    (read in blocks, not mapped), else what is wrong."""
    try:
        found = _npy_checksum(file)
    except ValueError as exc:
        return str(exc)
    return "" if found == expected else "does not match its checksum"


def _npy_checksum(file: Path) -> str:
    """`array_checksum` of the array in a `.npy` file, read in blocks (not mapped);
    ValueError saying what is wrong with a file that holds no plain array."""
    with file.open("rb") as fh:
        shape, fortran, dtype = _npy_header(fh)
        if fortran or dtype.hasobject:
            raise ValueError("is not a plain C-order array")
        size = int(np.prod(shape)) * dtype.itemsize
        data_at = fh.tell()
        if os.fstat(fh.fileno()).st_size != data_at + size:
            raise ValueError("has the wrong length (truncated or extended)")
        h = _checksum_start(dtype, shape)
        while chunk := fh.read(_HASH_BLOCK):
            h.update(chunk)
    return h.hexdigest()


def _map_npy(file: Path) -> np.ndarray:
    """The array of a verified `.npy` file: memory-mapped read-only (read whole when it
    has no data: an empty file region cannot be mapped)."""
    with file.open("rb") as fh:
        shape, _, dtype = _npy_header(fh)
    if int(np.prod(shape)) == 0:
        return np.load(file, allow_pickle=False)
    return np.load(file, mmap_mode="r", allow_pickle=False)


def _open_artifact(path: Path) -> dict[str, Any]:
    """The arrays (mapped) and metadata of an artifact folder this process has just
    written or verified, read without verifying again."""
    record = json.loads((path / "meta.json").read_text("utf-8"))
    return {**record["meta"], **{name: _map_npy(_array_file(path, name))
                                 for name in record["arrays"]}}


def _discard(path: Path, problem: str) -> None:
    log.warning("cache entry %s is damaged (%s); deleting it and computing it again",
                path, problem)
    shutil.rmtree(path, ignore_errors=True)
    return None
