"""INRIA Holidays (`holidays`): Jégou et al., ECCV 2008.

1,491 images in 500 groups; an image's group is the first four digits of its name
(`100000.jpg` .. `100002.jpg` form group 1000) and the group's first image (name ending
in `00`) is its query. Every query ranks the whole database, itself included, and its
own image never counts (neither positive nor position: the Holidays rule), so the
positives are the other images of its group. Queries are not cropped.

Orientation: the photos are distributed as shot, and a number of them (portrait shots
whose camera did not rotate the pixels) lie on their side. CNN-era papers (since Babenko
et al., ECCV 2014) evaluate on a copy with those photos turned upright, because CNN
features are not rotation invariant; that is the default here, `orientation=upright`
(`holidays/jpg_upright/`, `bench data fetch holidays-upright`, a third-party copy). SIFT
methods are unaffected by an in-plane rotation of a whole image in principle (DoG
keypoints are rotation covariant and each SIFT descriptor is measured in its keypoint's
own orientation, so the same descriptors come back), though in practice detection on the
turned pixels (and a keypoint cap, an image-size limit) can differ slightly, so their
scores on the two copies are close, not necessarily identical. `orientation=original` reads the
files as distributed (`holidays/jpg/`), as the SIFT-era papers did. `bench data fetch
holidays` gets both copies; with both present, `bench data info holidays` lists the
images whose orientation differs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from irbench.core.config import param
from irbench.datasets.base import Dataset, DatasetProvider, Image, Protocol, Query, QueryTruth
from irbench.datasets.catalog import get_package, missing
from irbench.datasets.oxford import index_images
from irbench.datasets.storage import Package
from irbench.errors import DatasetError

_NAME = re.compile(r"^\d{6}$")
FOLDERS = {"original": "jpg", "upright": "jpg_upright"}


@dataclass(frozen=True)
class HolidaysConfig:
    orientation: str = param(
        "upright", "which copy of the images: upright (default; sideways photos turned "
                   "upright, as CNN-era papers evaluate, CNN features not being rotation "
                   "invariant; SIFT is unaffected in principle) or original (as distributed, "
                   "as SIFT-era papers used them)", choices=("upright", "original"))


class Holidays(DatasetProvider):
    name = "holidays"
    description = "INRIA Holidays: 1,491 images, 500 queries; the query never counts."
    Config = HolidaysConfig
    packages = ("holidays-upright", "holidays")
    """The upright copy (the default) and the files as distributed (`orientation=original`)."""

    @classmethod
    def data_notes(cls, data_root: Path) -> list[str]:
        rotated = holidays_rotated(data_root)
        if not rotated:
            return []
        return [f"{len(rotated)} image(s) turned by 90 degrees in the upright copy: "
                + ", ".join(rotated)]

    def load(self) -> Dataset:
        cfg = self.config
        pkg = get_package("holidays" if cfg.orientation == "original" else "holidays-upright")
        folder = pkg.path(self.data_root) / FOLDERS[cfg.orientation]
        if not folder.is_dir():
            raise self._missing(pkg, f"image folder {folder}")
        files = index_images(folder)
        bad = [n for n in files if not _NAME.match(n)]
        if bad:
            raise DatasetError(f"{files[bad[0]]}: Holidays image names are six digits "
                               f"(group + index), e.g. 100000.jpg")
        if not files:
            raise self._missing(pkg, f"images (*.jpg) in {folder}")
        names = sorted(files)
        groups: dict[str, list[int]] = {}
        for i, n in enumerate(names):
            groups.setdefault(n[:4], []).append(i)
        database = tuple(Image(id=n, path=files[n], label=n[:4]) for n in names)
        queries, truths = [], []
        for group in sorted(groups):
            members = groups[group]
            q = members[0]
            queries.append(Query(id=names[q], path=files[names[q]], db_index=q, label=group))
            truths.append(QueryTruth(positives=members[1:]))
        return Dataset(
            name=self.name, version="1", database=database, queries=tuple(queries),
            ground_truth=tuple(truths),
            protocol=Protocol(exclude_query=True,
                              description="first image of each group queries the database; "
                                          "the query itself never counts"),
            root=folder, config=self.options())

    def _missing(self, pkg: Package, what: str) -> DatasetError:
        """The missing-files error: the layout and the fetch command of the copy asked
        for; for the upright copy, also the way to run on the files as distributed."""
        if self.config.orientation == "original":
            return missing(pkg, self.data_root, what, self.name, pkg.name)
        err = missing(pkg, self.data_root, f"{what} (the upright copy, orientation=upright, "
                                           f"the default)", self.name, pkg.name)
        return DatasetError(f"{err}\nOr use the photos as distributed (holidays/jpg/): "
                            f"--dataset-option orientation=original (in Python: "
                            f"orientation='original').")


def holidays_rotated(data_root: Path) -> list[str] | None:
    """Images whose upright copy is turned by 90 degrees (width and height swapped), when
    both copies of Holidays are present (an unreadable pair is listed as such); None
    otherwise."""
    from PIL import Image as PILImage

    base = get_package("holidays").path(data_root)
    original, upright = base / "jpg", base / "jpg_upright"
    if not (original.is_dir() and upright.is_dir()):
        return None
    out = []
    for path in sorted(original.glob("*.jpg")):
        other = upright / path.name
        if not other.is_file():
            continue
        try:
            with PILImage.open(path) as a, PILImage.open(other) as b:
                if a.size != b.size and a.size == b.size[::-1]:
                    out.append(path.stem)
        except OSError as exc:  # listed, not skipped: verify names it too
            out.append(f"{path.stem} (unreadable: {exc})")
    return out
