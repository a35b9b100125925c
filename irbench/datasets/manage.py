"""`bench data fetch / verify / info` as plain functions (notebooks can call them too).

A NAME is a registered dataset (`oxford105k` fetches `oxford5k` and `flickr100k`) or a
data package of `irbench.datasets.catalog` (`flickr100k`, `r1m`, `holidays-upright`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from irbench.core.cache import atomic_write_text, default_cache_dir
from irbench.core.parallel import parallel_map
from irbench.core.progress import NULL_PROGRESS, Progress
from irbench.datasets.base import Dataset
from irbench.datasets.catalog import PACKAGES, get_package
from irbench.datasets.images import jpeg_problem, read_image
from irbench.datasets.registry import DATASETS, load_dataset, split_dataset_name
from irbench.datasets.storage import (
    STATE_DIR,
    Package,
    extract,
    find_in,
    install_source,
    installed,
    recorded_checksums,
)
from irbench.errors import DatasetError, ImageReadError, IrbenchError, UnknownNameError

log = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".tgz", ".tar.gz", ".tar", ".zip", ".tar.bz2", ".tar.xz")
JPEG_SUFFIXES = (".jpg", ".jpeg")
"""The images of the downloadable data packages (all JPEG), as opposed to the readable
image types of `irbench.datasets.images.IMAGE_SUFFIXES`."""


def resolve(name: str) -> tuple[Any | None, list[Package]]:
    """(dataset provider class or None, the packages it needs) for a dataset or package."""
    base, _ = split_dataset_name(name)
    try:
        cls = DATASETS.get(base)
    except UnknownNameError:
        cls = None
    if cls is not None and getattr(cls, "packages", ()):
        return cls, [get_package(p) for p in cls.packages]
    if base in PACKAGES:
        return None, [PACKAGES[base]]
    if cls is not None and cls.takes_argument:
        raise DatasetError(f"dataset {name!r} is read from the path you give: there is "
                           f"nothing to fetch; `bench data verify {base}:PATH` checks its "
                           "images")
    if cls is not None:
        raise DatasetError(f"dataset {name!r} is generated: it has no files to fetch or "
                           "check")
    return None, [get_package(base)]  # raises with "did you mean"


# -- fetch ---------------------------------------------------------------------------------

def fetch(name: str, data_root: Path, *, from_path: Path | None = None, force: bool = False,
          keep_archives: bool = False, progress: Progress = NULL_PROGRESS) -> list[str]:
    """Download (or import from `from_path`), check and unpack everything `name` needs.
    Returns one report line per source. Installed sources are skipped unless `force`."""
    _, packages = resolve(name)
    data_root = Path(data_root)
    report: list[str] = []
    claimed = {s.filename for p in packages for s in p.sources}
    if from_path is None:  # say what needs the user's hand before downloading anything
        for pkg in packages:
            if pkg.manual and not installed(pkg, data_root) and not _present(pkg, data_root):
                raise DatasetError(f"{pkg.name} (needed by {name}): {pkg.manual}\n"
                                   f"Expected layout under {data_root}:\n  "
                                   + pkg.layout.replace("\n", "\n  "))
    for pkg in packages:
        if from_path is not None:
            report += _import(pkg, data_root, Path(from_path).expanduser(), claimed,
                              single=len(packages) == 1, force=force, progress=progress)
            continue
        if pkg.manual and not installed(pkg, data_root):
            if _present(pkg, data_root):
                report.append(f"{pkg.name}: present in {pkg.path(data_root)} (imported earlier)")
                continue
            raise DatasetError(f"{pkg.name}: {pkg.manual}\nExpected layout under "
                               f"{data_root}:\n  " + pkg.layout.replace("\n", "\n  "))
        for source in pkg.sources:
            what = install_source(pkg, data_root, source, progress=progress, force=force,
                                  keep_archive=keep_archives)
            report.append(f"{pkg.name}: {source.filename}: {what}")
    return report


def _present(pkg: Package, data_root: Path) -> bool:
    base = pkg.path(data_root)
    return bool(pkg.required) and all((base / r).exists() for r in pkg.required)


def _import(pkg: Package, data_root: Path, path: Path, claimed: set[str], *, single: bool,
            force: bool, progress: Progress) -> list[str]:
    if not path.exists():
        raise DatasetError(f"--from {path}: no such file or folder")
    report = []
    if path.is_file():
        matches = [s for s in pkg.sources if s.filename == path.name]
        if matches:
            what = install_source(pkg, data_root, matches[0], from_path=path, force=force,
                                  progress=progress)
            return [f"{pkg.name}: {path.name}: {what}"]
        if not pkg.sources and path.name.lower().endswith(ARCHIVE_SUFFIXES):
            return [_import_parts(pkg, data_root, [path], progress)]
        if single:
            expected = ", ".join(s.filename for s in pkg.sources) or "archives of images"
            raise DatasetError(f"--from {path}: not a file of {pkg.name} (expected {expected})")
        return []
    # a folder: the package's own files, or loose archive parts, or an extracted copy
    found = {s.filename: find_in(path, s.filename) for s in pkg.sources}
    if any(found.values()):
        for source in pkg.sources:
            src = found[source.filename]
            if src is None:
                if not installed_source(pkg, data_root, source.filename):
                    report.append(f"{pkg.name}: {source.filename}: not in {path}; still "
                                  "missing (run `bench data fetch` without --from to download it)")
                continue
            what = install_source(pkg, data_root, source, from_path=src, force=force,
                                  progress=progress)
            report.append(f"{pkg.name}: {source.filename}: {what}")
        return report
    if not pkg.sources:
        parts = sorted(p for p in path.rglob("*") if p.is_file()
                       and p.name.lower().endswith(ARCHIVE_SUFFIXES) and p.name not in claimed)
        if parts:
            return [_import_parts(pkg, data_root, parts, progress)]
    if not single:
        return [f"{pkg.name}: nothing of it in {path}"]
    return [_link(pkg, data_root, path)]


def installed_source(pkg: Package, data_root: Path, filename: str) -> bool:
    return (pkg.state_dir(data_root) / "complete" / filename).is_file()


def _import_parts(pkg: Package, data_root: Path, parts: Sequence[Path],
                  progress: Progress) -> str:
    """Archives of a package without fixed files (Flickr100k): unpack each into jpg/."""
    total = 0
    for part in parts:
        done = pkg.state_dir(data_root) / "complete" / f"import-{part.name}"
        if done.is_file():
            continue
        total += extract(part, pkg.path(data_root) / "jpg", keep=JPEG_SUFFIXES,
                         progress=progress)
        atomic_write_text(done, str(part) + "\n")
    return f"{pkg.name}: extracted {total} images from {len(parts)} archive(s) into " \
           f"{pkg.path(data_root) / 'jpg'}"


def _link(pkg: Package, data_root: Path, path: Path) -> str:
    """Point `<data root>/<folder>` at an extracted copy the user already has."""
    missing = [r for r in pkg.required if not (path / r).exists()]
    if missing:
        raise DatasetError(
            f"--from {path}: has neither the files of {pkg.name} "
            f"({', '.join(s.filename for s in pkg.sources) or 'archives'}) nor its layout "
            f"(missing {', '.join(missing)}). Expected layout under the data root:\n  "
            + pkg.layout.replace("\n", "\n  "))
    target = pkg.path(data_root)
    if target.is_symlink() and target.resolve() == path.resolve():
        return f"{pkg.name}: {target} already points to {path}"
    if target.exists() or target.is_symlink():
        raise DatasetError(f"{target} already exists; move it away to use {path} instead")
    target.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(path.resolve(), target, target_is_directory=True)
    return f"{pkg.name}: linked {target} -> {path.resolve()}"


# -- verify --------------------------------------------------------------------------------

@dataclass
class VerifyReport:
    name: str
    images_checked: int = 0
    counts: dict[str, tuple[int, int | None]] = field(default_factory=dict)
    """Per package: (image files found, expected)."""
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.corrupt or self.problems)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "images_checked": self.images_checked,
                "counts": {k: {"found": v[0], "expected": v[1]} for k, v in self.counts.items()},
                "missing": self.missing, "corrupt": self.corrupt, "problems": self.problems}


def _decode(path: str) -> str | None:
    if path.lower().endswith(JPEG_SUFFIXES):
        problem = jpeg_problem(path)
        if problem:
            return problem
    try:
        read_image(path)
    except ImageReadError as exc:
        return exc.problem
    return None


def verify(name: str, data_root: Path, *, workers: int = 1,
           progress: Progress = NULL_PROGRESS, decode: bool = True) -> VerifyReport:
    """Image counts, every ground-truth name resolves, every image exists and decodes.

    A dataset read from a path you give (`folder:PATH`, `manifest:FILE.json`) is loaded
    and every image of it (database, queries, train; each file once) is checked."""
    path_dataset = _path_dataset(name)
    if path_dataset is not None:
        cls, argument = path_dataset
        report = VerifyReport(name)
        dataset = _load_unchecked(cls, Path(data_root), report, argument)
        paths = _dataset_paths(dataset) if dataset is not None else []
        _check_images(report, paths, name, workers=workers, progress=progress,
                      decode=decode)
        return report
    cls, packages = resolve(name)
    data_root = Path(data_root)
    report = VerifyReport(name)
    for pkg in packages:
        found = count_images(pkg, data_root) if pkg.path(data_root).exists() else 0
        report.counts[pkg.name] = (found, pkg.expected_images)
        if not pkg.path(data_root).exists():
            report.problems.append(f"{pkg.name}: {pkg.path(data_root)} does not exist "
                                   f"(`bench data fetch {pkg.name}`)")
        elif pkg.expected_images is not None and found != pkg.expected_images:
            report.problems.append(f"{pkg.name}: {found:,} image files, expected "
                                   f"{pkg.expected_images:,}")
    paths: list[Path] = []
    if cls is not None:
        dataset = _load_unchecked(cls, data_root, report)
        if dataset is not None:
            paths = _dataset_paths(dataset)
    else:
        paths = _package_paths(packages[0], data_root, report)
    _check_images(report, paths, name, workers=workers, progress=progress, decode=decode)
    return report


def _path_dataset(name: str) -> tuple[Any, str] | None:
    """(provider class, argument) when `name` is a dataset read from a path you give
    (`folder:PATH`, `manifest:FILE.json`); None for every other name."""
    base, argument = split_dataset_name(name)
    try:
        cls = DATASETS.get(base)
    except UnknownNameError:
        return None
    if not cls.takes_argument or getattr(cls, "packages", ()):
        return None
    if not argument:
        raise DatasetError(f"dataset {base!r} needs an argument: `bench data verify "
                           f"{base}:PATH`")
    return cls, argument


def _check_images(report: VerifyReport, paths: Sequence[Path], name: str, *, workers: int,
                  progress: Progress, decode: bool) -> None:
    """Every image file, each once: missing ones and (with `decode`) ones that do not
    decode go into the report, all of them."""
    unique = list(dict.fromkeys(paths))
    report.images_checked = len(unique)
    present = []
    for p in unique:
        if p.is_file():
            present.append(p)
        else:
            report.missing.append(str(p))
    if decode and present:
        results = parallel_map(_decode, [str(p) for p in present], workers=workers,
                               progress=progress, description=f"decode {name}", chunksize=64)
        report.corrupt = [f"{p}: {why}" for p, why in zip(present, results, strict=True) if why]


def _load_unchecked(cls: Any, data_root: Path, report: VerifyReport,
                    argument: str | None = None) -> Dataset | None:
    provider = cls(cls.Config(), data_root=data_root, cache_dir=default_cache_dir(),
                   argument=argument)
    provider.check_files = False
    try:
        return provider.load()
    except IrbenchError as exc:
        report.problems.append(str(exc))
    except (OSError, ValueError) as exc:
        report.problems.append(f"{type(exc).__name__}: {exc}")
    return None


def _dataset_paths(ds: Dataset) -> list[Path]:
    return [im.path for im in ds.database] + [q.path for q in ds.queries] + \
           [im.path for im in ds.train]


def _package_paths(pkg: Package, data_root: Path, report: VerifyReport) -> list[Path]:
    from irbench.datasets.distractors import flickr100k_images, r1m_images

    try:
        if pkg.name == "r1m":
            return [im.path for im in r1m_images(data_root, pkg.name, check_files=False)]
        if pkg.name == "flickr100k":
            return [im.path for im in flickr100k_images(data_root, pkg.name)]
    except IrbenchError as exc:
        report.problems.append(str(exc))
        return []
    return [p for p in _image_files(pkg.path(data_root))
            if p.stem not in pkg.known_corrupt]


def _image_files(folder: Path) -> list[Path]:
    if not folder.exists():
        return []
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in JPEG_SUFFIXES
                  and STATE_DIR not in p.parts and not p.name.startswith("."))


def count_images(pkg: Package, data_root: Path) -> int:
    """Image files under the package's folder (outside irbench's state folder). For
    Holidays, whose folder holds two copies, only the copy of this package is counted."""
    base = pkg.path(data_root)
    sub = {"holidays": "jpg", "holidays-upright": "jpg_upright"}.get(pkg.name)
    return len(_image_files(base / sub if sub else base))


# -- info ----------------------------------------------------------------------------------

def info(name: str, data_root: Path) -> dict[str, Any]:
    """Counts, protocol, location, size on disk and status of a dataset or package."""
    cls, packages = resolve(name)
    data_root = Path(data_root)
    out: dict[str, Any] = {"name": name, "data_root": str(data_root), "packages": []}
    all_present = True
    for pkg in packages:
        base = pkg.path(data_root)
        exists = base.exists()
        present = exists and (_present(pkg, data_root) or installed(pkg, data_root))
        all_present &= present
        out["packages"].append({
            "name": pkg.name, "description": pkg.description, "path": str(base),
            "status": ("installed" if installed(pkg, data_root) else
                       "present" if present else "incomplete" if exists else "missing"),
            "images": count_images(pkg, data_root) if exists else 0,
            "expected_images": pkg.expected_images,
            "bytes": _du(base) if exists else 0,
            "homepage": pkg.homepage, "citation": pkg.citation,
            "sources": [{"file": s.filename, "urls": list(s.urls)} for s in pkg.sources],
            "checksums": recorded_checksums(pkg, data_root) if exists else {},
            "layout": pkg.layout, "notes": list(pkg.notes),
            **({"manual": pkg.manual} if pkg.manual else {}),
        })
    if cls is not None:
        out["description"] = cls.description
        if all_present:
            try:
                ds = load_dataset(name, data_root=data_root)
            except IrbenchError as exc:
                out["status"] = "error"
                out["error"] = str(exc)
            else:
                out["status"] = "ready"
                suspect = [f"{p}: {why}" for p in dict.fromkeys(_dataset_paths(ds))
                           if str(p).lower().endswith(JPEG_SUFFIXES)
                           and (why := jpeg_problem(p))]
                if suspect:
                    out["status"] = "corrupt images"
                    out["corrupt"] = suspect
                out["dataset"] = {
                    "version": ds.version, "database": len(ds.database),
                    "queries": len(ds.queries), "train": len(ds.train),
                    "classes": len({im.label for im in ds.train if im.label}),
                    "protocol": ds.protocol.to_dict(),
                }
        else:
            out["status"] = "missing"
    else:
        out["status"] = "ready" if all_present else "missing"
    if cls is not None:
        out["notes_on_files"] = cls.data_notes(data_root)
    return out


def _du(folder: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(folder, followlinks=True):
        for f in files:
            try:
                total += os.stat(os.path.join(dirpath, f)).st_size
            except OSError:
                continue
    return total
