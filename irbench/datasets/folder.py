"""`folder:PATH`: bring your own images, one subfolder per object.

Every image is a query against all the others; images of the same subfolder are its
positives; the query itself never counts (it is in the database and excluded, the
Holidays rule). There is no junk and no train split.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from irbench.core.config import param
from irbench.datasets.base import Dataset, DatasetProvider, Image, Protocol, Query, QueryTruth
from irbench.datasets.images import IMAGE_SUFFIXES
from irbench.errors import DatasetError


@dataclass(frozen=True)
class FolderConfig:
    min_images_per_class: int = param(
        2, "classes (subfolders) with fewer images are an error: a query needs a positive",
        minimum=1)


class FolderDataset(DatasetProvider):
    name = "folder"
    description = "Your own images: one subfolder per object, every image queries the rest."
    Config = FolderConfig
    takes_argument = True

    def load(self) -> Dataset:
        root = Path(self.argument or "").expanduser().resolve()
        if not root.is_dir():
            raise DatasetError(
                f"folder dataset: {root} is not a directory. Expected layout: "
                f"{root}/<object>/<image>.jpg, one subfolder per object."
            )
        classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        database: list[Image] = []
        for cls_dir in classes:
            files = sorted(f for f in cls_dir.rglob("*")
                           if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if len(files) < self.config.min_images_per_class:
                raise DatasetError(
                    f"folder dataset: {cls_dir} has {len(files)} image(s); every subfolder "
                    f"needs at least {self.config.min_images_per_class} (images with suffix "
                    f"{', '.join(IMAGE_SUFFIXES)})"
                )
            for f in files:
                database.append(Image(id=f.relative_to(root).as_posix(), path=f,
                                      label=cls_dir.name))
        if not database:
            raise DatasetError(f"folder dataset: no images under {root}. Expected layout: "
                               f"{root}/<object>/<image>.jpg, one subfolder per object.")
        by_class: dict[str, list[int]] = {}
        for i, im in enumerate(database):
            by_class.setdefault(im.label or "", []).append(i)
        queries = tuple(Query(id=im.id, path=im.path, db_index=i, label=im.label)
                        for i, im in enumerate(database))
        truth = tuple(QueryTruth(positives=[j for j in by_class[im.label or ""] if j != i])
                      for i, im in enumerate(database))
        h = hashlib.sha256()
        for im in database:
            h.update(f"{im.id}:{im.path.stat().st_size}\n".encode())
        return Dataset(
            name=f"folder:{root.name}",
            version=h.hexdigest()[:12],
            database=tuple(database),
            queries=queries,
            ground_truth=truth,
            protocol=Protocol(
                precision_at=(1, 5, 10),
                exclude_query=True,
                description="every image queries all others; same folder = positive; "
                            "the query itself never counts",
            ),
            root=root,
            config=self.options(),
        )
