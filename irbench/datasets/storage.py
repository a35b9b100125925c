"""Getting dataset files onto disk: resumable downloads, checksums, safe extraction, import.

Every download goes to `<file>.part` and is resumed with an HTTP `Range` request; only a
complete file whose checksum matches is renamed to its final name. Archives are extracted
into a temporary folder beside their destination and moved into place afterwards, and a
package counts as installed only once its completion marker is written, so nothing
half-downloaded or half-extracted is ever taken as complete.

Checksums: where the source publishes one, the file must match it, always. The SHA-256 of
a file is recorded in `<package>/.irbench/checksums.json` only once the file has been
unpacked completely and its completion marker written (a file that does not unpack is
never recorded); every later download or import of the same file must match it, except
under `--force`, which discards the recorded checksum of the files it gets again (with a
warning naming the file and the old checksum).

A truncated or damaged archive is a DatasetError naming the file; nothing of it is moved
into place and no marker or checksum is written.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import lzma
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from irbench.core.cache import atomic_write_text
from irbench.core.progress import NULL_PROGRESS, Progress
from irbench.errors import DatasetError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
STATE_DIR = ".irbench"
USER_AGENT = "irbench (instance-level image retrieval benchmark)"


@dataclass(frozen=True)
class Source:
    """One file of a package: where to get it and where its contents go.

    `urls` are tried in order: the official address first, then known mirrors.
    `extract_to` is the folder (relative to the package folder) an archive is unpacked
    into; `strip` drops that many leading path components of every member; `keep`
    keeps only members whose name ends with one of these suffixes (empty: all).
    A source that is not an archive (`extract_to=None`) is moved to `save_as`.
    """

    filename: str
    urls: tuple[str, ...]
    extract_to: str | None = "."
    save_as: str | None = None
    strip: int = 0
    flatten: bool = False
    """Drop every folder of the members (images that the loader expects in one folder)."""
    keep: tuple[str, ...] = ()
    sha256: str | None = None
    """Published SHA-256, when the source publishes one."""
    md5: str | None = None
    """Published MD5, when the source publishes one."""


@dataclass(frozen=True)
class Package:
    """A unit of storage under the data root: one folder, its sources and its layout."""

    name: str
    folder: str
    description: str
    sources: tuple[Source, ...]
    layout: str
    """The expected layout under `<data root>/<folder>`, shown in errors and the README."""
    homepage: str
    citation: str = ""
    expected_images: int | None = None
    manual: str = ""
    """Set when the files cannot be fetched automatically: what the user must do."""
    required: tuple[str, ...] = ()
    """Paths (relative to the package folder) that an installed copy must have."""
    known_corrupt: frozenset[str] = frozenset()
    """Image names (no extension) known not to decode; the loaders leave them out."""
    notes: tuple[str, ...] = field(default_factory=tuple)

    def path(self, data_root: Path) -> Path:
        return Path(data_root) / self.folder

    def state_dir(self, data_root: Path) -> Path:
        return self.path(data_root) / STATE_DIR


# -- checksums -----------------------------------------------------------------------------

def file_digest(path: Path, algorithm: str = "sha256",
                progress: Progress = NULL_PROGRESS) -> str:
    h = hashlib.new(algorithm)
    size = path.stat().st_size
    with progress.task(f"checksum {path.name}", total=size) as advance, path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
            advance(len(chunk))
    return h.hexdigest()


def recorded_checksums(package: Package, data_root: Path) -> dict[str, Any]:
    path = package.state_dir(data_root) / "checksums.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc}); delete it to record the "
                           f"checksums again at the next download") from exc


def _record_checksum(package: Package, data_root: Path, source: Source, digest: str,
                     size: int, origin: str) -> None:
    path = package.state_dir(data_root) / "checksums.json"
    data = recorded_checksums(package, data_root)
    data[source.filename] = {"sha256": digest, "bytes": size, "origin": origin,
                             "recorded": datetime.now(timezone.utc).isoformat(
                                 timespec="seconds")}
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def check_file(package: Package, data_root: Path, source: Source, path: Path, origin: str,
               progress: Progress = NULL_PROGRESS, *, force: bool = False) -> str:
    """Verify `path` against the published checksum of `source` and the SHA-256 recorded
    at its last complete install; return its SHA-256. A mismatch raises DatasetError
    naming the file, except that with `force` a recorded checksum that differs is
    discarded with a warning (a published one never is). Records nothing:
    `install_source` records the checksum once the file is unpacked."""
    digest = file_digest(path, "sha256", progress)
    if source.sha256 and digest != source.sha256.lower():
        raise DatasetError(f"{path}: SHA-256 {digest} does not match the published "
                           f"{source.sha256} of {source.filename}; the file is not used")
    if source.md5:
        md5 = file_digest(path, "md5")
        if md5 != source.md5.lower():
            raise DatasetError(f"{path}: MD5 {md5} does not match the published "
                               f"{source.md5} of {source.filename}; the file is not used")
    recorded = recorded_checksums(package, data_root).get(source.filename)
    if recorded and recorded.get("sha256") != digest:
        checksums = package.state_dir(data_root) / "checksums.json"
        when = f"{recorded.get('recorded')}, from {recorded.get('origin')}"
        if force:
            log.warning("--force: %s has SHA-256 %s, not the %s recorded for %s (%s) in %s; "
                        "the recorded checksum is discarded and the new one recorded once "
                        "the file is unpacked", path, digest, recorded.get("sha256"),
                        source.filename, when, checksums)
        else:
            raise DatasetError(
                f"{path}: SHA-256 {digest} differs from {recorded.get('sha256')} recorded at "
                f"the first download of {source.filename} ({when}); the file is not used. "
                f"If the source really changed, run `bench data fetch` again with --force "
                f"to discard the recorded checksum (kept in {checksums})")
    return digest


# -- download ------------------------------------------------------------------------------

def download(url: str, target: Path, *, progress: Progress = NULL_PROGRESS,
             timeout: float = 60.0, retries: int = 3) -> Path:
    """Download `url` to `target`, resuming `target.part` with an HTTP Range request.

    The partial file is renamed to `target` only when the server's announced length is
    reached. Network errors are retried `retries` times (resuming each time); the last
    one is raised as DatasetError with the partial file kept for the next attempt.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    last: Exception | None = None
    for attempt in range(retries + 1):
        try:
            _download_once(url, part, progress=progress, timeout=timeout)
            os.replace(part, target)
            return target
        except (urllib.error.URLError, OSError, http.client.HTTPException, _Truncated) as exc:
            if isinstance(exc, urllib.error.HTTPError) and exc.code in (403, 404, 410):
                raise DatasetError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
            last = exc
            if attempt < retries:
                log.info("download of %s interrupted (%s); resuming", url, exc)
                time.sleep(min(2 ** attempt, 10) * 0.1)
    kept = (f"; the partial file {part} is kept and the next `bench data fetch` resumes it"
            if part.exists() and part.stat().st_size else "")
    raise DatasetError(f"{url}: download failed ({last}){kept}")


class _Truncated(Exception):
    pass


def _download_once(url: str, part: Path, *, progress: Progress, timeout: float) -> None:
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to fetch: the part is complete
            return
        raise
    with response:
        status = getattr(response, "status", 200)
        length = response.headers.get("Content-Length")
        if status == 206:
            total = _total_from_content_range(response.headers.get("Content-Range"))
            mode = "ab"
        else:  # the server ignored the Range header: start again
            have = 0
            total = int(length) if length is not None else None
            mode = "wb"
        with progress.task(f"download {part.name[:-5]}", total=total) as advance:
            advance(have)
            with part.open(mode) as fh:
                while chunk := response.read(CHUNK):
                    fh.write(chunk)
                    advance(len(chunk))
                fh.flush()
                os.fsync(fh.fileno())
    size = part.stat().st_size
    if total is not None and size != total:
        raise _Truncated(f"got {size} of {total} bytes")


def _total_from_content_range(value: str | None) -> int | None:
    # "bytes 100-199/1234"
    if not value or "/" not in value:
        return None
    total = value.rsplit("/", 1)[1].strip()
    return int(total) if total.isdigit() else None


# -- extraction ----------------------------------------------------------------------------

def extract(archive: Path, destination: Path, *, strip: int = 0, flatten: bool = False,
            keep: Sequence[str] = (), progress: Progress = NULL_PROGRESS) -> int:
    """Unpack a .tar(.gz|.bz2|.xz)/.tgz/.zip archive into `destination`.

    Members are written to a temporary folder beside `destination` and moved in when
    all are out. Absolute paths, `..` and links are refused; a truncated or damaged
    archive raises DatasetError naming it, with nothing moved in and the temporary
    folder removed. Returns the number of files.
    """
    destination = Path(destination)
    created = not destination.parent.exists()
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = destination.parent / f".{destination.name}.extract-{archive.name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    count = 0
    member = ""
    done = False
    try:
        try:
            with _members(archive) as (names, read), \
                    progress.task(f"extract {archive.name}", total=len(names)) as advance:
                for name in names:
                    rel = _member_target(name, strip, flatten, archive)
                    if rel is None or (keep and not name.lower().endswith(tuple(keep))):
                        advance(1)
                        continue
                    out = staging / rel
                    out.parent.mkdir(parents=True, exist_ok=True)
                    member = name
                    with read(name) as src, out.open("wb") as dst:
                        shutil.copyfileobj(src, dst, CHUNK)
                    member = ""
                    count += 1
                    advance(1)
        except DatasetError:
            raise
        except (EOFError, OSError, tarfile.TarError, zipfile.BadZipFile, zlib.error,
                lzma.LZMAError) as exc:
            raise _unpack_error(archive, exc, member, staging) from exc
        for path in sorted(staging.rglob("*")):
            if path.is_file():
                final = destination / path.relative_to(staging)
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, final)
        done = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not done:  # leave no empty package folder behind either
            with contextlib.suppress(OSError):
                destination.parent.rmdir()
    return count


_AGAIN = "nothing was unpacked; get a complete copy of the file and run `bench data fetch` again"


def _unpack_error(archive: Path, exc: BaseException, member: str,
                  staging: Path) -> DatasetError:
    """A DatasetError saying whether `archive` is truncated or damaged (or, for an error
    with an errno such as a full disk, that it could not be written out)."""
    where = f" in member {member!r}" if member else ""
    if isinstance(exc, OSError) and exc.errno is not None:
        return DatasetError(f"cannot unpack {archive} into {staging} ({exc}); nothing was "
                            "unpacked")
    if isinstance(exc, EOFError) or "unexpected end of data" in str(exc):
        return DatasetError(f"{archive}: truncated archive{where}: the data ends early "
                            f"({exc}); {_AGAIN}")
    return DatasetError(f"{archive}: damaged archive{where} ({type(exc).__name__}: {exc}); "
                        f"{_AGAIN}")


_COMPRESSED = {b"\x1f\x8b": "gzip", b"BZh": "bz2", b"\xfd7zXZ\x00": "xz"}


def _stream_problem(archive: Path) -> str | None:
    """Why a gzip/bzip2/xz file cannot be decompressed to its end (None if it can or
    is not compressed): tells a truncated download from a file that is not an archive."""
    import bz2
    import gzip

    with archive.open("rb") as fh:
        head = fh.read(6)
    kind = next((k for magic, k in _COMPRESSED.items() if head.startswith(magic)), None)
    if kind is None:
        return None
    opener = {"gzip": gzip.open, "bz2": bz2.open, "xz": lzma.open}[kind]
    try:
        with opener(archive, "rb") as fh:
            while fh.read(CHUNK):
                pass
    except EOFError:
        return f"truncated archive: the {kind} data ends before its end-of-stream marker"
    except (OSError, zlib.error, lzma.LZMAError) as exc:
        return f"damaged archive: the {kind} data does not decompress ({exc})"
    return None


def _check_tar_end(tf: tarfile.TarFile, archive: Path) -> None:
    """The members must end with the end-of-archive marker (a zero block) and a
    compressed stream must decompress to its end: tarfile silently stops listing at a
    truncation or a damaged header, which would drop the members after it."""
    fh: Any = tf.fileobj
    fh.seek(tf.offset)
    block = fh.read(tarfile.BLOCKSIZE)
    if len(block) < tarfile.BLOCKSIZE:
        raise DatasetError(f"{archive}: truncated archive: it ends after {len(tf.members)} "
                           f"member(s) without the end-of-archive marker; {_AGAIN}")
    if block.strip(b"\0"):
        raise DatasetError(f"{archive}: damaged archive: the member header at byte "
                           f"{tf.offset} of the tar data is not valid (after "
                           f"{len(tf.members)} readable member(s)); {_AGAIN}")
    while fh.read(CHUNK):  # a compressed stream checks its length and CRC at its end
        pass


@contextlib.contextmanager
def _members(archive: Path) -> Iterator[tuple[list[str], Callable[[str], Any]]]:
    name = archive.name.lower()
    if name.endswith(".zip"):
        try:
            zf = zipfile.ZipFile(archive)
        except zipfile.BadZipFile as exc:
            with archive.open("rb") as fh:
                local_header = fh.read(4) == b"PK\x03\x04"
            if local_header:  # starts like a zip, lacks the directory at its end
                raise DatasetError(f"{archive}: truncated archive: a zip whose central "
                                   f"directory (at the end of the file) is missing; "
                                   f"{_AGAIN}") from exc
            raise DatasetError(f"{archive}: not a readable zip archive ({exc})") from exc
        with zf:
            names = [i.filename for i in zf.infolist() if not i.is_dir()]
            yield names, zf.open
        return
    try:
        tf = tarfile.open(archive, "r:*")  # noqa: SIM115 - closed by the `with tf` below
    except (tarfile.TarError, OSError) as exc:
        problem = _stream_problem(archive) if archive.is_file() else None
        if problem:
            raise DatasetError(f"{archive}: {problem}; {_AGAIN}") from exc
        raise DatasetError(f"{archive}: not a readable tar archive ({exc})") from exc
    with tf:
        members = {}
        for m in tf.getmembers():
            if m.issym() or m.islnk():
                raise DatasetError(f"{archive}: member {m.name!r} is a link; refused")
            if m.isfile():
                members[m.name] = m
        _check_tar_end(tf, archive)

        @contextlib.contextmanager
        def read(member: str):
            fh = tf.extractfile(members[member])
            if fh is None:
                raise DatasetError(f"{archive}: member {member!r} cannot be read")
            with fh:
                yield fh

        yield list(members), read


def _member_target(name: str, strip: int, flatten: bool, archive: Path) -> Path | None:
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if name.startswith("/") or ".." in parts:
        raise DatasetError(f"{archive}: member {name!r} points outside the archive; refused")
    if any(p.startswith("._") or p == "__MACOSX" for p in parts):
        return None  # macOS resource forks
    parts = parts[strip:]
    if not parts:
        return None
    return Path(parts[-1]) if flatten else Path(*parts)


# -- install -------------------------------------------------------------------------------

def marker(package: Package, data_root: Path, source: Source) -> Path:
    return package.state_dir(data_root) / "complete" / source.filename


def installed(package: Package, data_root: Path) -> bool:
    """Every source of the package was downloaded, checked and unpacked completely."""
    return bool(package.sources) and all(
        marker(package, data_root, s).is_file() for s in package.sources)


def install_source(package: Package, data_root: Path, source: Source, *,
                   from_path: Path | None = None, progress: Progress = NULL_PROGRESS,
                   keep_archive: bool = False, force: bool = False) -> str:
    """Get one source (download it, or take it from `from_path`), check it and unpack it.
    Its SHA-256 is recorded only after it is unpacked and its marker written; `force`
    gets it again even when installed and discards a recorded checksum that differs.
    Returns what was done, for the report."""
    done = marker(package, data_root, source)
    if done.is_file() and not force:
        return "already installed"
    pkg_dir = package.path(data_root)
    if from_path is not None:  # the user's file is checked and read in place, never moved
        origin = str(from_path)
        archive = Path(from_path)
        digest = check_file(package, data_root, source, archive, origin, progress,
                            force=force)
        owned = False
    else:
        archive = package.state_dir(data_root) / "downloads" / source.filename
        owned = True
        if not archive.is_file():
            errors = []
            for url in source.urls:
                try:
                    download(url, archive, progress=progress)
                    origin = url
                    break
                except DatasetError as exc:
                    errors.append(str(exc))
                    log.warning("%s", exc)
            else:
                raise DatasetError(f"could not download {source.filename} for "
                                   f"{package.name}:\n  " + "\n  ".join(errors))
        else:
            origin = "existing download"
        try:
            digest = check_file(package, data_root, source, archive, origin, progress,
                                force=force)
        except DatasetError:
            archive.unlink(missing_ok=True)  # a bad download is never used, nor kept
            raise
    size = archive.stat().st_size
    if source.extract_to is None:
        final = pkg_dir / (source.save_as or source.filename)
        final.parent.mkdir(parents=True, exist_ok=True)
        if owned and not keep_archive:
            os.replace(archive, final)
        else:
            tmp = final.with_name(final.name + ".part")
            shutil.copyfile(archive, tmp)
            os.replace(tmp, final)
        what = f"saved {final.relative_to(data_root)}"
    else:
        try:
            n = extract(archive, pkg_dir / source.extract_to, strip=source.strip,
                        flatten=source.flatten, keep=source.keep, progress=progress)
        except DatasetError:
            if owned:  # a download that does not unpack is not kept either
                archive.unlink(missing_ok=True)
            raise
        if owned and not keep_archive:
            archive.unlink()
        what = f"extracted {n} files into {(pkg_dir / source.extract_to).relative_to(data_root)}"
    done.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(done, json.dumps({"origin": origin, "what": what,
                                        "date": datetime.now(timezone.utc).isoformat(
                                            timespec="seconds")}) + "\n")
    _record_checksum(package, data_root, source, digest, size, origin)
    return what


def find_in(folder: Path, filename: str) -> Path | None:
    """`filename` directly in `folder` or anywhere below it."""
    direct = folder / filename
    if direct.is_file():
        return direct
    for path in folder.rglob(filename):
        if path.is_file():
            return path
    return None
