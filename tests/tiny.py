"""Tiny on-disk data for tests: a few coloured, textured images and a manifest."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from irbench.core.config import param
from irbench.datasets.base import Image, Query
from irbench.datasets.images import read_image
from irbench.methods.base import GlobalDescriptorMethod, Stage

COLORS = [(220, 40, 40), (40, 200, 60), (50, 60, 230), (230, 200, 40)]


def make_image(path: Path, cls: int, variant: int, size: int = 64) -> None:
    rng = np.random.default_rng(cls * 100 + variant)
    img = np.full((size, size, 3), 128, np.uint8)
    img[:] = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8) + 60
    color = np.array(COLORS[cls % len(COLORS)]) * (0.8 + 0.1 * variant)
    x, y = 8 + 2 * variant, 10 + variant
    cv2.rectangle(img, (x, y), (x + 36, y + 36), tuple(int(c) for c in np.clip(color, 0, 255)), -1)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


def make_folder(root: Path, classes: int = 4, per_class: int = 3) -> Path:
    for c in range(classes):
        for v in range(per_class):
            make_image(root / f"object{c}" / f"view{v}.png", c, v)
    return root


def make_manifest(root: Path, classes: int = 4, per_class: int = 3,
                  train_classes: Sequence[int] = (), filename: str = "tiny.json") -> Path:
    """`classes` x `per_class` database images, one separate query per class (with a box),
    and two labelled train images of each of `train_classes`."""
    database, queries = [], []
    for c in range(classes):
        for v in range(per_class):
            name = f"db/c{c}_{v}.png"
            make_image(root / name, c, v)
            database.append({"path": name, "label": f"c{c}"})
        qname = f"q/c{c}.png"
        make_image(root / qname, c, per_class)
        queries.append({"path": qname, "box": [4, 4, 60, 60],
                        "positives": [f"db/c{c}_{v}.png" for v in range(per_class)]})
    train = []
    for c in train_classes:
        for v in (5, 6):
            name = f"train/c{c}_{v}.png"
            make_image(root / name, c, v)
            train.append({"path": name, "label": f"c{c}", "box": [4, 4, 60, 60]})
    doc = {"name": "tiny", "version": "1", "database": database, "queries": queries,
           "protocol": {"crop_query": True, "precision_at": [1, 3]},
           **({"train": train} if train else {})}
    path = root / filename
    path.write_text(json.dumps(doc))
    return path


@dataclass(frozen=True)
class MeanColorConfig:
    grid: int = param(2, "cells per side; each contributes its mean colour", minimum=1,
                      stage="features")
    unused: int = param(0, "a field the features do not depend on", stage="query")


class MeanColor(GlobalDescriptorMethod):
    """A toy global descriptor: mean colour per grid cell. Counts encode() calls."""

    name = "mean-color"
    description = "toy: mean colour per grid cell"
    Config = MeanColorConfig
    encoded = 0

    def encode(self, images: Sequence[Image | Query]) -> np.ndarray:
        type(self).encoded += len(images)
        g = self.config.grid
        out = []
        for im in images:
            box = im.crop_box if isinstance(im, Query) else None
            arr = cv2.resize(read_image(im.path, box), (8 * g, 8 * g), interpolation=cv2.INTER_AREA)
            out.append(arr.reshape(g, 8, g, 8, 3).mean(axis=(1, 3)).reshape(-1))
        return np.asarray(out, np.float32) - 128.0


@dataclass(frozen=True)
class TrainedColorConfig:
    grid: int = param(2, "cells per side", minimum=1, stage="features")


class TrainedColor(MeanColor):
    """A toy trained descriptor: the mean colour grid minus the mean of the train split's
    (its "network", an upstream artifact the features depend on, like F-CNN's)."""

    name = "trained-color"
    description = "toy: mean colour per grid cell, centred on the train split"
    Config = TrainedColorConfig
    stages = {"finetune": Stage(seeded=True), "features": Stage(after=("finetune",))}

    def fit(self, train: Sequence[Image]) -> None:
        train = tuple(train)

        def compute() -> dict:
            return {"mean": MeanColor.encode(self, train).mean(axis=0)}

        art = self.cached("finetune", compute, inputs={"train": self.context.identify(train)})
        self._mean, self._network_id = np.asarray(art["mean"], np.float32), art.id

    def feature_inputs(self) -> dict:
        return {"network": self._network_id}

    def encode(self, images: Sequence[Image | Query]) -> np.ndarray:
        return super().encode(images) - self._mean


def demo_photo_folder(root: Path, objects: int) -> Path:
    """The demo's photographic database views laid out one folder per object (for
    `folder:DIR` runs on real photographs)."""
    from irbench.datasets import load

    ds = load("demo", objects=objects)
    for im in ds.database:
        if im.label is not None:
            (root / im.label).mkdir(parents=True, exist_ok=True)
            (root / im.label / im.path.name).write_bytes(im.path.read_bytes())
    return root
