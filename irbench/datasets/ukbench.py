"""UKBench (`ukbench`): Nistér and Stewénius, CVPR 2006.

10,200 images `ukbench00000.jpg` .. `ukbench10199.jpg` of 2,550 objects, four
consecutive images per object. Every image is a query against the whole database; its
four object images, itself included, are its positives (the convention under which the
N-S score is defined). Reported: the N-S score (how many of the four are in the top 4,
0..4) and mAP. Queries are not cropped.
"""

from __future__ import annotations

import re

from irbench.datasets.base import Dataset, DatasetProvider, Image, Protocol, Query, QueryTruth
from irbench.datasets.catalog import get_package, missing
from irbench.errors import DatasetError

_NAME = re.compile(r"^ukbench(\d{5})\.jpg$", re.IGNORECASE)


class UKBench(DatasetProvider):
    name = "ukbench"
    description = "UKBench: 10,200 images, each a query; N-S score (top 4) and mAP."
    packages = ("ukbench",)

    def load(self) -> Dataset:
        pkg = get_package("ukbench")
        base = pkg.path(self.data_root)
        folder = next((f for f in (base / "full", *sorted(base.glob("*/full")))
                       if f.is_dir()), None)
        if folder is None:
            raise missing(pkg, self.data_root, f"image folder {base / 'full'}", self.name)
        numbered = {}
        for path in folder.iterdir():
            m = _NAME.match(path.name)
            if m:
                numbered[int(m.group(1))] = path
        if not numbered:
            raise missing(pkg, self.data_root, f"images ukbench<nnnnn>.jpg in {folder}",
                          self.name)
        n = max(numbered) + 1
        if n % 4 or len(numbered) != n:
            absent = [i for i in range(n + (-n % 4)) if i not in numbered]
            raise DatasetError(f"dataset ukbench: {folder} lacks {len(absent)} image(s) of "
                               f"complete groups of four, e.g. ukbench{absent[0]:05d}.jpg")
        database = tuple(Image(id=numbered[i].name, path=numbered[i], label=str(i // 4))
                         for i in range(n))
        queries = tuple(Query(id=im.id, path=im.path, db_index=i, label=im.label)
                        for i, im in enumerate(database))
        truths = tuple(QueryTruth(positives=range(4 * (i // 4), 4 * (i // 4) + 4))
                       for i in range(n))
        return Dataset(
            name=self.name, version="1", database=database, queries=queries,
            ground_truth=truths,
            protocol=Protocol(ns_score=True,
                              description="every image queries all; its 4 object images "
                                          "(itself included) are positive; N-S score = "
                                          "positives in the top 4"),
            root=folder, config=self.options())
