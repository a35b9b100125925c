"""Oxford Buildings (`oxford5k`, `oxford105k`) and the shared reader of the Oxford-style
ground truth (`<query>_{query,good,ok,junk}.txt`), also used by Paris.

Protocol (Philbin et al., CVPR 2007; the official `compute_ap`): 55 queries, each
cropped to its box; positives are `good` + `ok` (read as sets: `all_souls_1_good.txt`
lists one image twice, so it has 78 positives, not 79); `junk` images are ignored;
the query image stays in the database and counts as a positive like any other.
Train split (used by the fine-tuned methods, as the seed paper does for Oxford): the
55 query crops, labelled by their 11 landmarks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from irbench.datasets.base import (
    Box,
    Dataset,
    DatasetProvider,
    Image,
    Protocol,
    Query,
    QueryTruth,
)
from irbench.datasets.catalog import get_package, missing
from irbench.errors import DatasetError

_QUERY_FILE = re.compile(r"^(?P<name>.+)_query\.txt$")


@dataclass(frozen=True)
class GtQuery:
    """One query of an Oxford-style ground-truth folder."""

    name: str
    image: str
    box: Box
    good: tuple[str, ...]
    ok: tuple[str, ...]
    junk: tuple[str, ...]

    @property
    def landmark(self) -> str:
        """`all_souls_1` -> `all_souls`."""
        return self.name.rsplit("_", 1)[0]


def read_names(path: Path) -> tuple[str, ...]:
    """One image name per line (no extension); blank lines skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{path}: ground-truth file is missing") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not a text file ({exc})") from exc
    names = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if len(line.split()) != 1:
            raise DatasetError(f"{path}, line {lineno}: expected one image name, got {line!r}")
        names.append(_strip_ext(line))
    return tuple(names)


def read_query_file(path: Path) -> tuple[str, Box]:
    """`oxc1_<image> x1 y1 x2 y2` (Oxford) or `<image> x1 y1 x2 y2` (Paris)."""
    lines = [(i, ln.strip()) for i, ln in enumerate(path.read_text(encoding="utf-8")
                                                   .splitlines(), 1) if ln.strip()]
    if len(lines) != 1:
        raise DatasetError(f"{path}: expected one line '<image> x1 y1 x2 y2', found "
                           f"{len(lines)} non-empty lines")
    lineno, line = lines[0]
    fields = line.split()
    try:
        if len(fields) != 5:
            raise ValueError
        x1, y1, x2, y2 = (float(v) for v in fields[1:])
    except ValueError:
        raise DatasetError(f"{path}, line {lineno}: expected '<image> x1 y1 x2 y2', "
                           f"got {line!r}") from None
    if not (x2 > x1 and y2 > y1):
        raise DatasetError(f"{path}, line {lineno}: empty box ({x1}, {y1}, {x2}, {y2})")
    image = fields[0]
    if image.startswith("oxc1_"):
        image = image[len("oxc1_"):]
    return _strip_ext(image), (x1, y1, x2, y2)


def read_gt_folder(gt_dir: Path) -> list[GtQuery]:
    """Every `<name>_query.txt` of `gt_dir` with its good/ok/junk lists, sorted by name."""
    queries = []
    for path in sorted(gt_dir.iterdir()):
        m = _QUERY_FILE.match(path.name)
        if not m:
            continue
        name = m.group("name")
        image, box = read_query_file(path)
        queries.append(GtQuery(
            name=name, image=image, box=box,
            good=read_names(gt_dir / f"{name}_good.txt"),
            ok=read_names(gt_dir / f"{name}_ok.txt"),
            junk=read_names(gt_dir / f"{name}_junk.txt"),
        ))
    if not queries:
        raise DatasetError(f"{gt_dir}: no <query>_query.txt ground-truth files")
    return queries


def index_images(folder: Path, suffixes: tuple[str, ...] = (".jpg", ".jpeg")) -> dict[str, Path]:
    """Image files under `folder` (any depth) by name without extension; a name found
    twice is an error naming both files."""
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in suffixes and path.is_file() and not path.name.startswith("."):
            stem = path.stem
            if stem in found:
                raise DatasetError(f"image name {stem!r} appears twice: {found[stem]} and {path}")
            found[stem] = path
    return found


def _strip_ext(name: str) -> str:
    return name[:-4] if name.lower().endswith(".jpg") else name


class BuildingsDataset(DatasetProvider):
    """Oxford5k / Paris6k: images in `<folder>/jpg`, ground truth in `<folder>/gt`."""

    package: str = ""
    version = "1"
    dropped: frozenset[str] = frozenset()
    """Images known not to decode: left out of the database and of every list."""
    protocol_note = ""
    independent_set = ""
    """The dataset customarily used to train visual vocabularies for this one."""

    def load(self) -> Dataset:
        pkg = get_package(self.package)
        base = pkg.path(self.data_root)
        jpg, gt = base / "jpg", base / "gt"
        for folder, what in ((jpg, "image folder"), (gt, "ground-truth folder")):
            if not folder.is_dir():
                raise missing(pkg, self.data_root, f"{what} {folder}", self.name)
        files = index_images(jpg)
        if not files:
            raise missing(pkg, self.data_root, f"images (*.jpg) in {jpg}", self.name)
        names = sorted(n for n in files if n not in self.dropped)
        index = {n: i for i, n in enumerate(names)}
        database = tuple(Image(id=n, path=files[n]) for n in names)
        queries, truths, train = [], [], []
        unresolved: list[str] = []

        def resolve(names_: tuple[str, ...], file: Path) -> list[int]:
            out = []
            for n in names_:
                if n in index:
                    out.append(index[n])
                elif n not in self.dropped:
                    unresolved.append(f"{file.name}: {n}")
            return out

        for q in read_gt_folder(gt):
            [qi] = resolve((q.image,), gt / f"{q.name}_query.txt") or [None]
            positives = (resolve(q.good, gt / f"{q.name}_good.txt")
                         + resolve(q.ok, gt / f"{q.name}_ok.txt"))
            junk = resolve(q.junk, gt / f"{q.name}_junk.txt")
            if qi is None:
                continue
            queries.append(Query(id=q.name, path=files[q.image], box=q.box, crop=True,
                                 db_index=qi, label=q.landmark))
            truths.append(QueryTruth(positives=positives, junk=junk))
            train.append(Image(id=q.name, path=files[q.image], box=q.box, label=q.landmark))
        if unresolved:
            shown = "\n  ".join(unresolved[:20])
            more = f"\n  ... and {len(unresolved) - 20} more" if len(unresolved) > 20 else ""
            raise DatasetError(f"dataset {self.name}: {len(unresolved)} image name(s) in the "
                               f"ground truth under {gt} are not in {jpg}:\n  {shown}{more}")
        return Dataset(
            name=self.name, version=self.version, database=database, queries=tuple(queries),
            ground_truth=tuple(truths),
            protocol=Protocol(
                crop_query=True,
                description="queries cropped to their box; good+ok positive, junk ignored "
                            "(official compute_ap)" + self.protocol_note),
            train=tuple(train), root=base, config=self.options(),
            independent_set=self.independent_set)


class Oxford5k(BuildingsDataset):
    name = "oxford5k"
    description = "Oxford Buildings: 5,063 images, 55 cropped queries (good+ok, junk ignored)."
    package = "oxford5k"
    packages = ("oxford5k",)
    independent_set = "paris6k"
