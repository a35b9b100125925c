"""Content signatures of image files: what identifies an image in every cache key.

An image's signature is the SHA-256 of the whole file. Hashing every file on every run
would read the whole dataset each time (about 100 GB for R1M), so signatures are
memoized per absolute path together with the file's status (size, mtime and ctime in
nanoseconds, inode): a file whose status is unchanged keeps its signature and costs one
`stat`; any write to a file changes its mtime and ctime, so it is hashed again.
`verify=True` (`bench run --verify-images`) ignores the memo and hashes every file, for
the one case the status cannot see (a file rewritten in place with its old mtime, within
one ctime tick). `benchmarks/bench_fingerprint.py` measures both on 10,000 images.

Why the whole file and not only its ends (size + the first and last 64 KiB): retrieval
images are mostly smaller than 128 KiB + 64 KiB, so reading both ends reads nearly
the whole file anyway, and an edit in the middle of a larger file would go unseen.

The memo is one SQLite file in the cache (`signatures.sqlite`): safe to share between
processes and people, written in one transaction per call, and rebuilt (with a warning)
when it is damaged; a memo another process keeps locked past the connection's 60 s
timeout is left alone and skipped for that call (with a warning), never deleted. Files that are missing, unreadable, empty, not an image (by their
leading bytes) or truncated (a JPEG without its end-of-image marker, a PNG without its
IEND chunk: decoders still return the top of such a picture, silently) are reported all
at once, before any long computation starts; a bad file is never memoized, so it is
checked again on the next run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from irbench.errors import BadImagesError, ImageReadError

log = logging.getLogger(__name__)

__all__ = ["ImageSigner", "image_format"]

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"P5", "pgm"),
    (b"P6", "ppm"),
    (b"P2", "pgm"),
    (b"P3", "ppm"),
)


def image_format(head: bytes) -> str | None:
    """The image format announced by a file's leading bytes (None: not one OpenCV reads)."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def _jpeg_truncated(data: bytes) -> bool:
    """Whether a JPEG ends before its end-of-image marker: the marker segments before the
    first start-of-scan are skipped by their lengths (an EXIF thumbnail holds a JPEG of its
    own), and inside scan data 0xFF is always followed by 0x00 or a restart marker, so the
    first 0xFFD9 after the first scan is the end of the image. Bytes after it (a phone's
    trailer) are fine. A truncated download lacks it, yet decoders still return the top of
    the picture, silently."""
    pos, n = 2, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return False  # not a marker where one must be: leave it to the decoder
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:
            return False  # end of image before any scan
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker == 0xDA:  # start of scan: is there an end marker after it? (searched
            # from the end, where it normally is: fast)
            return data.rfind(b"\xff\xd9", pos + 2 + length) < 0
        pos += 2 + length
    return True


def _integrity_problem(kind: str, data: bytes) -> str | None:
    """A cheap structural check of a whole image file in memory (None: nothing found)."""
    if kind == "jpeg" and _jpeg_truncated(data):
        return "truncated JPEG (no end-of-image marker after the image data)"
    if kind == "png" and data.find(b"IEND", 8) < 0:
        return "truncated PNG (no IEND chunk)"
    return None


def _status(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _hash_file(path: str) -> tuple[str | None, tuple[int, int, int, int] | None, str | None]:
    """(hex SHA-256, status, None) of a readable image file, else (None, None, problem)."""
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            data = fh.read()
    except FileNotFoundError:
        return None, None, "file not found"
    except IsADirectoryError:
        return None, None, "a folder, not a file"
    except OSError as exc:
        return None, None, f"cannot be read ({exc.strerror or exc})"
    if not data:
        return None, None, "empty file"
    kind = image_format(data[:16])
    if kind is None:
        return None, None, "not an image file (unknown leading bytes)"
    problem = _integrity_problem(kind, data)
    if problem is not None:
        return None, None, problem
    return hashlib.sha256(data).hexdigest(), _status(st), None


class ImageSigner:
    """Signatures of image files by absolute path, memoized in a SQLite file (or in
    memory only when `memo` is None); `verify=True` hashes every file again."""

    def __init__(self, memo: Path | None = None, *, verify: bool = False,
                 threads: int = 8) -> None:
        self.memo = None if memo is None else Path(memo)
        self.verify = verify
        self.threads = max(1, threads)
        self._known: dict[str, str] = {}
        """Signatures found or computed by this signer (each file at most once a run)."""
        self._lists: dict[int, tuple[Any, str]] = {}
        """`identify` results of immutable lists, by object id (the list is kept alive)."""

    # -- signatures ------------------------------------------------------------------------

    def sign(self, paths: Iterable[str | os.PathLike]) -> dict[str, str]:
        """Signature of every file (by absolute path); raises `BadImagesError` listing
        every file that is missing, unreadable, empty or not an image."""
        wanted = list(dict.fromkeys(os.path.abspath(p) for p in paths))
        todo = [p for p in wanted if p not in self._known]
        if todo:
            self._sign(todo)
        return {p: self._known[p] for p in wanted}

    def _sign(self, paths: list[str]) -> None:
        memo = {} if self.verify else self._memo_lookup(paths)
        stale: list[str] = []
        problems: list[ImageReadError] = []
        for p in paths:
            found = memo.get(p)
            if found is None:
                stale.append(p)
                continue
            try:
                status = _status(os.stat(p))
            except OSError:
                stale.append(p)  # hashing it reports the problem
                continue
            if status == found[0]:
                self._known[p] = found[1]
            else:
                stale.append(p)
        fresh: list[tuple[str, tuple[int, int, int, int], str]] = []
        if stale:
            with ThreadPoolExecutor(max_workers=min(self.threads, len(stale))) as pool:
                for p, (digest, status, problem) in zip(stale, pool.map(_hash_file, stale),
                                                        strict=True):
                    if problem is not None:
                        problems.append(ImageReadError(p, problem))
                    else:
                        self._known[p] = digest
                        fresh.append((p, status, digest))
            log.debug("hashed %d of %d image files", len(stale), len(paths))
        if fresh:
            self._memo_store(fresh)
        if problems:
            raise BadImagesError.combine(problems)

    def _connect(self) -> sqlite3.Connection:
        assert self.memo is not None
        self.memo.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.memo, timeout=60)
        con.execute("CREATE TABLE IF NOT EXISTS signature (path TEXT PRIMARY KEY, "
                    "size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER, inode INTEGER, "
                    "sha256 TEXT)")
        return con

    def _memo_lookup(self, paths: list[str]
                     ) -> dict[str, tuple[tuple[int, int, int, int], str]]:
        if self.memo is None:
            return {}
        out: dict[str, tuple[tuple[int, int, int, int], str]] = {}
        try:
            con = self._connect()
            try:
                for begin in range(0, len(paths), 900):  # SQLite's parameter limit
                    batch = paths[begin:begin + 900]
                    marks = ",".join("?" * len(batch))
                    for row in con.execute(
                            "SELECT path, size, mtime_ns, ctime_ns, inode, sha256 FROM "
                            f"signature WHERE path IN ({marks})", batch):
                        out[row[0]] = ((row[1], row[2], row[3], row[4]), row[5])
            finally:
                con.close()
        except sqlite3.OperationalError as exc:  # busy or locked: not damage
            self._memo_unavailable(exc)
            return {}
        except sqlite3.DatabaseError as exc:
            self._discard_memo(exc)
            return {}
        return out

    def _memo_store(self, rows: list[tuple[str, tuple[int, int, int, int], str]]) -> None:
        if self.memo is None:
            return
        try:
            con = self._connect()
            try:
                with con:
                    con.executemany("INSERT OR REPLACE INTO signature VALUES (?,?,?,?,?,?)",
                                    [(p, *st, d) for p, st, d in rows])
            finally:
                con.close()
        except sqlite3.OperationalError as exc:
            self._memo_unavailable(exc)
        except sqlite3.DatabaseError as exc:
            self._discard_memo(exc)

    def _memo_unavailable(self, exc: Exception) -> None:
        # Another process holds the memo longer than the connection's timeout (or the
        # folder is read-only): this call neither reads nor writes it. Signatures are
        # still computed from the files, so only speed is lost, and the memo (which
        # someone else may be using) is left alone.
        log.warning("the image signature memo %s is unavailable (%s); signatures are "
                    "computed from the files this time", self.memo, exc)

    def _discard_memo(self, exc: Exception) -> None:
        log.warning("the image signature memo %s is damaged (%s); deleting it (signatures "
                    "are computed again)", self.memo, exc)
        for suffix in ("", "-journal", "-wal", "-shm"):
            Path(f"{self.memo}{suffix}").unlink(missing_ok=True)

    # -- identities of image lists ------------------------------------------------------------

    def identify(self, images: Sequence[Any]) -> str:
        """Content identity of an image list (SHA-256): for every image its id, absolute
        path, box, crop flag, label and signature, in order. Raises `BadImagesError`
        listing every bad file."""
        cached = self._lists.get(id(images))
        if cached is not None and cached[0] is images:
            return cached[1]
        signatures = self.sign(im.path for im in images)
        h = hashlib.sha256(b"irbench image list v1\n")
        for im in images:
            path = os.path.abspath(im.path)
            row = [im.id, path, None if im.box is None else [float(v) for v in im.box],
                   bool(getattr(im, "crop", False)), im.label, signatures[path]]
            h.update(json.dumps(row, separators=(",", ":")).encode())
            h.update(b"\n")
        digest = h.hexdigest()
        if isinstance(images, tuple):
            self._lists[id(images)] = (images, digest)
        return digest
