"""The Dataset contract: database, queries, ground truth, train split and protocol.

A dataset owns its protocol (query cropping, junk, Easy/Medium/Hard, query exclusion);
the harness only reads the `Protocol` and never tests a dataset's name.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from irbench.core.config import NoConfig, changed_fields
from irbench.core.progress import NULL_PROGRESS, Progress

if TYPE_CHECKING:
    from irbench.datasets.signature import ImageSigner

Box = tuple[float, float, float, float]
"""A box in pixels, (x1, y1, x2, y2), in the image's own coordinates."""


@dataclass(frozen=True)
class Image:
    """One image: a stable id, its file, and optionally an object box and a class label."""

    id: str
    path: Path
    box: Box | None = None
    label: str | None = None


@dataclass(frozen=True)
class Query:
    """One query: an image, its box (if the protocol gives one), and where it sits in the database.

    `crop` says whether the protocol crops the query to `box` before description;
    methods may override it with a config field of their own (e.g. `query_crop=full`).
    `db_index` is the query image's index in the database when it is also a database
    image (Holidays, UKBench, folders); the evaluator then applies the protocol's
    query-exclusion rule.
    """

    id: str
    path: Path
    box: Box | None = None
    crop: bool = False
    db_index: int | None = None
    label: str | None = None

    @property
    def crop_box(self) -> Box | None:
        """The box to crop the query to, or None for the full image."""
        return self.box if self.crop else None


class QueryTruth(Mapping[str, np.ndarray]):
    """Ground truth of one query: named sets of database indices (sorted, unique, int64).

    Standard protocols use `positives` and `junk`; the revisited protocol uses `easy`,
    `hard` and `junk`. Which sets are positive and which are ignored in each evaluation
    setting is the Protocol's business (`Protocol.settings`).
    """

    __slots__ = ("_sets",)

    def __init__(self, **sets: Sequence[int] | np.ndarray) -> None:
        self._sets = {
            name: np.unique(np.asarray(values, dtype=np.int64).reshape(-1))
            for name, values in sets.items()
        }

    def __getitem__(self, name: str) -> np.ndarray:
        return self._sets.get(name, np.empty(0, dtype=np.int64))

    def __iter__(self):
        return iter(self._sets)

    def __len__(self) -> int:
        return len(self._sets)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v)}" for k, v in self._sets.items())
        return f"QueryTruth({sizes})"


@dataclass(frozen=True)
class Setting:
    """One evaluation setting: which ground-truth sets are positive and which are junk."""

    positives: tuple[str, ...] = ("positives",)
    junk: tuple[str, ...] = ("junk",)


STANDARD_SETTINGS: dict[str, Setting] = {"": Setting()}
"""One setting: positives are `positives`, junk is ignored (Oxford, Paris, INSTRE, ...)."""

REVISITED_SETTINGS: dict[str, Setting] = {
    "easy": Setting(positives=("easy",), junk=("junk", "hard")),
    "medium": Setting(positives=("easy", "hard"), junk=("junk",)),
    "hard": Setting(positives=("hard",), junk=("junk", "easy")),
}
"""Radenović et al., CVPR 2018, Sec. 3: the Easy, Medium and Hard settings."""


@dataclass(frozen=True)
class Protocol:
    """How a dataset is evaluated. Every rule the evaluator applies comes from here."""

    settings: Mapping[str, Setting] = field(default_factory=lambda: dict(STANDARD_SETTINGS))
    """Named evaluation settings; "" is the single unnamed one."""
    precision_at: tuple[int, ...] = ()
    """k values of mP@k reported besides mAP."""
    crop_query: bool = False
    """Queries are cropped to their box before description (Oxford, Paris, revisited)."""
    exclude_query: bool = False
    """The query image is in the database and never counts (Holidays rule)."""
    ns_score: bool = False
    """Also report the UKBench N-S score (relevant images in the top 4, query included)."""
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": {
                name: {"positives": list(s.positives), "junk": list(s.junk)}
                for name, s in self.settings.items()
            },
            "precision_at": list(self.precision_at),
            "crop_query": self.crop_query,
            "exclude_query": self.exclude_query,
            "ns_score": self.ns_score,
            "description": self.description,
        }


@dataclass(frozen=True)
class Segment:
    """A contiguous run `[start, stop)` of database images that several datasets share
    (a distractor set). `name` (e.g. `flickr100k@1`) replaces the dataset id in the cache
    keys of the run's per-image artifacts, so their features are computed once and reused
    by every base dataset the distractors are attached to."""

    name: str
    start: int
    stop: int


class ImageList(tuple):
    """A tuple of `Image`s that knows which runs of it are shared `Segment`s.

    Methods receive the database as this type; pass it on as given (`list(database)`
    or slicing drops the segments, and shared features are then computed again)."""

    segments: tuple[Segment, ...]

    def __new__(cls, images: Sequence[Image] = (), segments: Sequence[Segment] = ()):
        self = super().__new__(cls, images)
        n = len(self)
        for seg in segments:
            if not 0 <= seg.start <= seg.stop <= n:
                raise ValueError(f"segment {seg.name} [{seg.start}, {seg.stop}) is outside "
                                 f"the {n} images")
        self.segments = tuple(segments)
        return self

    def __reduce__(self):
        return (ImageList, (tuple(self), self.segments))


def split_segments(images: Sequence[Any]) -> list[tuple[Segment | None, int, int]]:
    """Cut an image list into its shared segments and the runs between them (None)."""
    segments = sorted(getattr(images, "segments", ()), key=lambda s: s.start)
    out: list[tuple[Segment | None, int, int]] = []
    pos = 0
    for seg in segments:
        if seg.start > pos:
            out.append((None, pos, seg.start))
        if seg.stop > seg.start:
            out.append((seg, seg.start, seg.stop))
        pos = max(pos, seg.stop)
    if pos < len(images) or not out:
        out.append((None, pos, len(images)))
    return out


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset. Indices in ground truth refer to positions in `database`."""

    name: str
    version: str
    database: tuple[Image, ...]
    queries: tuple[Query, ...]
    ground_truth: tuple[QueryTruth, ...]
    protocol: Protocol
    train: tuple[Image, ...] = ()
    root: Path | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    """The dataset options it was loaded with (part of its identity)."""
    independent_set: str = ""
    """A registered dataset whose database customarily trains this one's unsupervised
    models (visual vocabularies): Paris for Oxford and vice versa; "" when there is none."""

    def __post_init__(self) -> None:
        if len(self.queries) != len(self.ground_truth):
            raise ValueError(
                f"dataset {self.name}: {len(self.queries)} queries but "
                f"{len(self.ground_truth)} ground-truth entries"
            )
        n = len(self.database)
        for qi, truth in enumerate(self.ground_truth):
            for set_name, idx in truth.items():
                if idx.size and (idx[0] < 0 or idx[-1] >= n):
                    raise ValueError(
                        f"dataset {self.name}: query {self.queries[qi].id} has {set_name} "
                        f"index out of range [0, {n})"
                    )

    @property
    def label(self) -> str:
        """Name with options, e.g. `instre-s[exclude_train=True]`."""
        if not self.config:
            return self.name
        opts = ",".join(f"{k}={v}" for k, v in sorted(self.config.items()))
        return f"{self.name}[{opts}]"

    def fingerprint(self, signer: ImageSigner) -> str:
        """The dataset's identity, SHA-256 of everything that changes a number: name,
        version, options, resolved root, protocol, ground truth, shared segments, and the
        content identity of the database, queries and train split (`ImageSigner.
        identify`: every image's id, path, box, crop flag, label and file signature).
        Raises `BadImagesError` listing every missing or unreadable image file."""
        h = hashlib.sha256(b"irbench dataset v2\n")
        root = None if self.root is None else os.path.abspath(self.root)
        h.update(json.dumps([self.name, self.version, dict(self.config), root,
                             self.protocol.to_dict(),
                             [[s.name, s.start, s.stop] for s in
                              getattr(self.database, "segments", ())]],
                            sort_keys=True, default=str).encode())
        for truth in self.ground_truth:
            for set_name in sorted(truth):
                h.update(set_name.encode())
                h.update(np.ascontiguousarray(truth[set_name], np.int64).tobytes())
            h.update(b";")
        signer.sign(im.path for part in (self.database, self.queries, self.train)
                    for im in part)  # every bad file listed at once
        for part in (self.database, self.queries, self.train):
            h.update(signer.identify(part).encode())
        return h.hexdigest()


class DatasetProvider:
    """A registered dataset: a name, a one-line description, a Config, and `load()`.

    Subclasses set `name`, `description`, optionally `Config` (a frozen dataclass whose
    fields are the dataset's options) and `takes_argument` (for `folder:PATH` style
    names), and implement `load`.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Config: ClassVar[type] = NoConfig
    takes_argument: ClassVar[bool] = False
    """True when the dataset is named `NAME:ARGUMENT` (e.g. `folder:PATH`)."""
    packages: ClassVar[tuple[str, ...]] = ()
    """Data packages (`irbench.datasets.catalog`) it is read from: what `bench data
    fetch NAME` gets and `bench data verify / info NAME` check."""

    progress: Progress = NULL_PROGRESS
    """Draws the bars of long loads (set by `load_dataset`; none by default)."""

    check_files: bool = True
    """Loaders that read an image list check that every file exists (`bench data verify`
    turns this off to list every missing file itself)."""

    @classmethod
    def data_notes(cls, data_root: Path) -> list[str]:
        """What `bench data info` should say about this dataset's files on disk beyond
        counts and status (Holidays: the images its upright copy turns); none here."""
        return []

    def __init__(self, config: Any, data_root: Path, cache_dir: Path,
                 argument: str | None = None) -> None:
        self.config = config
        self.data_root = Path(data_root)
        self.cache_dir = Path(cache_dir)
        self.argument = argument

    def load(self) -> Dataset:
        raise NotImplementedError

    def options(self) -> dict[str, Any]:
        """The config as a dict, only the fields that differ from their defaults."""
        return changed_fields(self.config)
