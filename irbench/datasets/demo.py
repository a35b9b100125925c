"""`demo`: a small INSTRE-like instance retrieval set, generated offline on first use.

What it is
    Synthetic photographs of flat "objects" pasted into cluttered scenes, generated
    deterministically from a seed into the cache (`<cache>/demo/<version>-<config hash>/`)
    in a few seconds, with no download. It exercises every part of the harness: a train
    split with boxes and labels, cropped queries, a database with boxes (for detectors)
    and clutter-only distractors.

Sources
    Objects are distinct, non-overlapping crops of the real photographs shipped inside
    scikit-image's data folder (astronaut, chelsea, coffee, rocket, motorcycle, Hubble deep
    field, horse, coins, camera, page, text, logo, IHC, retina, clock, color wheel, phantom,
    cell, ...), read directly from disk (no network). When more objects are asked for than
    the catalogue holds, the rest are procedural patterns (random shapes and letters).
    Backgrounds use only textures that are never objects: grass, gravel, brick and moon
    (random crop, scale, flip, colour tint), plus random coloured shapes, lines, textured
    clutter quads and noise, different for every image.

Transformations (per view, independent draws)
    - scale: the object's size (square root of its area) is 38-62 % of the image's
      shorter side (about 90-150 px at the default 320x240), smaller only where an
      elongated object would not fit;
    - in-plane rotation: uniform in +-`max_rotation` degrees (default 30);
    - perspective: each corner of the object moves independently by up to 12 % of the
      object's width in x and of its height in y (a moderate out-of-plane tilt);
    - lighting: gain 0.7-1.3, bias +-20 grey levels, gamma 0.7-1.4, per-channel tint
      0.9-1.1 and a linear shading ramp of +-15 % across the object;
    - occlusion: with probability `occlusion` (default 0.5) a clutter patch (texture or
      solid colour, rectangle or ellipse) covers 5-25 % of the object's pixels;
    - position: uniform such that the whole warped object lies inside the image;
    - whole image: Gaussian noise (sigma 1-4), a slight blur in 30 % of images, JPEG q95.
    Each image's box is the axis-aligned bounding box of the warped object quad
    (x1, y1, x2, y2, float pixels with pixel i spanning [i, i+1]), clipped to the image.

Small objects among clutter objects (`object_scale=small`)
    The scenes the seed paper is about (Sec. 3.2, INSTRE): a small object in a busy
    picture, where a global descriptor mixes the object with everything around it. The
    object covers 5-20 % of the image's area (uniform) and is pasted over 2-4 clutter
    objects of the same sizes and transformations, anywhere in the image: the
    `CLUTTER_POOL` objects that come after the instances in the catalogue (real
    photographs, then procedural patterns), never queried and never labelled. Everything
    else is as above. The default (`large`) is left out of the folder name and the index,
    so sets generated before the option existed keep their identity.

Splits (per object, all views distinct images)
    - train: `train_views` views with boxes and labels, disjoint from everything else;
    - query: `query_views` views with boxes; the protocol crops queries to their box, and
      queries are not in the database;
    - database: `database_views` views with boxes and labels, plus `distractors` images of
      clutter only (no object; label and box None). The database order is shuffled.

Protocol
    Standard (one setting, positives only, no junk): a query's positives are the database
    views of its object; distractors and other objects are negatives. Queries are cropped to
    their box; mAP and mP@1, 5, 10 are reported.

Files
    `<root>/{train,query,database}/<object>/NN.jpg`, `<root>/database/distractors/NNN.jpg`
    and `index.json`, written last (atomically) with everything needed to rebuild the
    Dataset and the SHA-256 of every image; its presence marks a complete generation, and
    a load that finds an image missing or changed regenerates the set. Bump
    `GENERATOR_VERSION` whenever the generator's output changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from irbench.core.cache import atomic_write_bytes
from irbench.core.config import config_hash, config_to_dict, param
from irbench.core.progress import NULL_PROGRESS, Progress
from irbench.datasets.base import Dataset, DatasetProvider, Image, Protocol, Query, QueryTruth
from irbench.errors import ConfigError, DatasetError

log = logging.getLogger(__name__)

GENERATOR_VERSION = "1"
"""Bump whenever the generated images or the index change for a given config."""

INDEX_NAME = "index.json"
INDEX_FORMAT = 2
JPEG_QUALITY = 95
MAX_OBJECTS = 1000
DISTRACTOR_DIR = "distractors"

# Ranges of the per-view transformations (documented in the module docstring).
OBJECT_SIZE = (0.38, 0.62)  # sqrt(area), as a fraction of the image's shorter side
SMALL_OBJECT_AREA = (0.05, 0.20)  # object_scale=small: area, as a fraction of the image's
CLUTTER_OBJECTS = (2, 5)  # object_scale=small: 2-4 clutter objects per image
CLUTTER_POOL = 16  # object_scale=small: the objects after the instances, used as clutter
PERSPECTIVE = 0.12  # corner jitter, fraction of the object width / height
GAIN = (0.7, 1.3)
BIAS = (-20.0, 20.0)
GAMMA = (0.7, 1.4)
TINT = (0.9, 1.1)
SHADING = 0.15
OCCLUSION = (0.05, 0.25)  # fraction of the object's pixels covered
NOISE = (1.0, 4.0)
BLUR_PROB = 0.3
SOURCE_SIDE = 256  # objects are stored with this longer side before warping

# Seed-sequence tags, so every image draws from its own stream (adding distractors does
# not change the object views, and so on).
_TAG_VIEW, _TAG_DISTRACTOR, _TAG_ORDER, _TAG_PATTERN = 1, 2, 3, 4
_SPLITS = ("train", "query", "database")

# name, file in skimage's data folder, crop (x1, y1, x2, y2) in the file's pixels.
# Crops of one photo never overlap, so every object is a distinct instance.
CATALOGUE: tuple[tuple[str, str, tuple[int, int, int, int]], ...] = (
    ("astronaut-face", "astronaut.png", (150, 20, 330, 210)),
    ("coffee-cup", "coffee.png", (130, 20, 470, 330)),
    ("chelsea-cat", "chelsea.png", (120, 40, 400, 300)),
    ("rocket", "rocket.jpg", (250, 30, 420, 427)),
    ("motorcycle", "motorcycle_left.png", (40, 120, 700, 470)),
    ("hubble-field", "hubble_deep_field.jpg", (100, 100, 500, 450)),
    ("horse", "horse.png", (0, 0, 400, 328)),
    ("coins", "coins.png", (0, 0, 190, 150)),
    ("cameraman", "camera.png", (100, 40, 390, 440)),
    ("page", "page.png", (0, 0, 384, 191)),
    ("handwriting", "text.png", (0, 0, 448, 172)),
    ("logo", "logo.png", (0, 0, 500, 500)),
    ("ihc-tissue", "ihc.png", (0, 0, 300, 300)),
    ("retina", "retina.jpg", (0, 0, 1411, 1411)),
    ("clock", "clock_motion.png", (120, 60, 320, 250)),
    ("color-wheel", "color.png", (0, 0, 371, 370)),
    ("astronaut-shuttle", "astronaut.png", (350, 0, 470, 230)),
    ("phantom", "phantom.png", (0, 0, 400, 400)),
    ("garage-shelves", "motorcycle_left.png", (440, 0, 741, 115)),
    ("astronaut-flag", "astronaut.png", (0, 0, 140, 230)),
    ("cell", "cell.png", (300, 280, 550, 520)),
    ("astronaut-suit", "astronaut.png", (90, 240, 330, 500)),
    ("camera-skyline", "camera.png", (390, 100, 512, 260)),
    ("garage-wall", "motorcycle_left.png", (0, 0, 330, 118)),
    # Beyond the default 24: distinct instances, but close to an earlier one in look.
    ("rocket-tower", "rocket.jpg", (0, 0, 240, 427)),
    ("hubble-galaxies", "hubble_deep_field.jpg", (550, 500, 1000, 872)),
    ("coins-right", "coins.png", (190, 150, 384, 303)),
    ("ihc-glands", "ihc.png", (310, 310, 512, 512)),
    ("coffee-table", "coffee.png", (470, 0, 600, 160)),
)

BACKGROUND_FILES = ("grass.png", "gravel.png", "brick.png", "moon.png")
"""Textures used only for backgrounds, occluders and clutter, never as objects."""


@dataclass(frozen=True)
class DemoConfig:
    objects: int = param(24, "number of object instances (the first come from photos)")
    train_views: int = param(3, "train views per object (boxes and labels)")
    query_views: int = param(2, "query views per object (cropped to their box)")
    database_views: int = param(7, "database views per object (the query's positives)")
    distractors: int = param(24, "database images of clutter only, with no object")
    width: int = param(320, "image width in pixels")
    height: int = param(240, "image height in pixels")
    max_rotation: float = param(30.0, "largest in-plane rotation of an object, in degrees")
    occlusion: float = param(0.5, "probability that a view is partly occluded (<= 25%)")
    seed: int = param(0, "random seed: same config, byte-identical images")
    object_scale: str = param(
        "large", "large: one object per view, 38-62% of the shorter side; small: the "
        "object covers 5-20% of the image among 2-4 clutter objects",
        choices=("large", "small"))

    def __post_init__(self) -> None:
        checks = [
            (1 <= self.objects <= MAX_OBJECTS, f"objects must be in [1, {MAX_OBJECTS}]"),
            (self.train_views >= 0, "train_views must be >= 0"),
            (self.query_views >= 1, "query_views must be >= 1"),
            (self.database_views >= 1, "database_views must be >= 1 (queries need positives)"),
            (self.distractors >= 0, "distractors must be >= 0"),
            (64 <= self.width <= 4096, "width must be in [64, 4096]"),
            (64 <= self.height <= 4096, "height must be in [64, 4096]"),
            (0.0 <= self.max_rotation <= 180.0, "max_rotation must be in [0, 180]"),
            (0.0 <= self.occlusion <= 1.0, "occlusion must be in [0, 1]"),
            (self.seed >= 0, "seed must be >= 0"),
            (self.object_scale in ("large", "small"), "object_scale must be large or small"),
        ]
        problems = [msg for ok, msg in checks if not ok]
        if problems:
            raise ConfigError(f"demo dataset: {'; '.join(problems)}")


class DemoDataset(DatasetProvider):
    name = "demo"
    description = "Built-in INSTRE-like demo set, generated offline from scikit-image photos."
    Config = DemoConfig

    def folder(self) -> Path:
        """Where this config's images and index live."""
        return self.cache_dir / "demo" / f"{GENERATOR_VERSION}-{_identity_hash(self.config)}"

    def load(self) -> Dataset:
        root = self.folder()
        index = _read_index(root, self.config)
        if index is None:
            start = time.perf_counter()
            log.info("generating the demo dataset into %s", root)
            index = generate(self.config, root, self.progress)
            log.info("generated the demo dataset (%d images) in %.1f s", _count(index),
                     time.perf_counter() - start)
        return dataset_from_index(index, root, self.options())


# -- index --------------------------------------------------------------------------------


def _identity(config: DemoConfig) -> dict[str, Any]:
    """The config as the folder name and the index record it: `object_scale` is left out
    when it is `large` (its default), so the sets generated before the option existed
    keep their folder, index and fingerprint."""
    out = config_to_dict(config)
    if out.get("object_scale") == "large":
        del out["object_scale"]
    return out


def _identity_hash(config: DemoConfig) -> str:
    return config_hash(config, fields=list(_identity(config)))[:12]


def _count(index: dict[str, Any]) -> int:
    return sum(len(index[s]) for s in _SPLITS)


def _read_index(root: Path, config: DemoConfig) -> dict[str, Any] | None:
    """The index of a complete generation of `config` in `root`, or None."""
    path = root / INDEX_NAME
    if not path.is_file():
        if root.is_dir():
            log.info("%s has no %s (interrupted generation?); regenerating", root, INDEX_NAME)
        return None
    try:
        index = json.loads(path.read_text("utf-8"))
        ok = (index.get("format") == INDEX_FORMAT
              and index.get("generator_version") == GENERATOR_VERSION
              and index.get("config") == _identity(config))
        missing = _damaged(root, [e for s in _SPLITS for e in index[s]])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("ignoring unreadable %s (%s); regenerating", path, exc)
        return None
    if not ok:
        log.warning("%s was written for another config or generator; regenerating", path)
        return None
    if missing:
        log.warning("%s lists %d missing or damaged file(s), e.g. %s; regenerating", path,
                    len(missing), missing[0])
        return None
    return index


def dataset_from_index(index: dict[str, Any], root: Path, options: dict[str, Any]) -> Dataset:
    def box(value: Any) -> tuple[float, float, float, float] | None:
        return None if value is None else tuple(float(v) for v in value)  # type: ignore[return-value]

    try:
        database = tuple(Image(id=e["id"], path=root / e["file"], box=box(e["box"]),
                               label=e["label"]) for e in index["database"])
        train = tuple(Image(id=e["id"], path=root / e["file"], box=box(e["box"]),
                            label=e["label"]) for e in index["train"])
        queries = tuple(Query(id=e["id"], path=root / e["file"], box=box(e["box"]), crop=True,
                              db_index=None, label=e["label"]) for e in index["query"])
        truth = tuple(QueryTruth(positives=e["positives"], junk=[]) for e in index["query"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"demo dataset: malformed {root / INDEX_NAME}: {exc}") from None
    return Dataset(
        name="demo",
        version=root.name,
        database=database,
        queries=queries,
        ground_truth=truth,
        protocol=demo_protocol(),
        train=train,
        root=root,
        config=options,
    )


def demo_protocol() -> Protocol:
    return Protocol(
        precision_at=(1, 5, 10),
        crop_query=True,
        description="synthetic INSTRE-like views; queries cropped to their box; positives are "
                    "the database views of the query's object, distractors are clutter only",
    )


# -- generation ---------------------------------------------------------------------------


def generate(config: DemoConfig, root: Path, progress: Progress = NULL_PROGRESS
             ) -> dict[str, Any]:
    """Write every image of `config` under `root`, then `index.json`; return the index
    (`progress`: a bar moving per image)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / INDEX_NAME).unlink(missing_ok=True)
    textures = _load_textures()
    objects = [_load_object(i) for i in range(config.objects)]
    clutter = [_load_object(i)[2] for i in range(config.objects, config.objects + CLUTTER_POOL)
               ] if config.object_scale == "small" else []
    size = (config.width, config.height)
    entries: dict[str, list[dict[str, Any]]] = {s: [] for s in _SPLITS}
    counts = {"train": config.train_views, "query": config.query_views,
              "database": config.database_views}
    total = config.objects * sum(counts.values()) + config.distractors
    with progress.task("demo: generating images", total=total) as advance:
        _render_all(config, root, objects, clutter, textures, size, counts, entries, advance)
    order = np.random.default_rng(np.random.SeedSequence([config.seed, _TAG_ORDER]))
    return _finish_index(config, root, objects, entries, order)


def _render_all(config, root, objects, clutter, textures, size, counts, entries,
                advance) -> None:
    """Render and write every view and distractor into `entries` (per split)."""
    for oi, (name, source, patch) in enumerate(objects):
        view = 0
        for split in _SPLITS:
            for k in range(counts[split]):
                rng = np.random.default_rng(np.random.SeedSequence(
                    [config.seed, _TAG_VIEW, oi, view]))
                view += 1
                image, box, occluded = _render_view(rng, patch, textures, size, config,
                                                    clutter)
                rel = f"{split}/{name}/{k:02d}.jpg"
                entries[split].append({"id": f"{split}/{name}/{k:02d}", "file": rel,
                                       "sha256": _write_jpeg(root / rel, image),
                                       "box": box, "label": name, "source": source,
                                       "occluded": occluded})
                advance(1)
    for k in range(config.distractors):
        rng = np.random.default_rng(np.random.SeedSequence([config.seed, _TAG_DISTRACTOR, k]))
        image = _finish(rng, _background(rng, textures, size))
        rel = f"database/{DISTRACTOR_DIR}/{k:03d}.jpg"
        entries["database"].append({"id": f"database/{DISTRACTOR_DIR}/{k:03d}", "file": rel,
                                    "sha256": _write_jpeg(root / rel, image),
                                    "box": None, "label": None, "source": None,
                                    "occluded": 0.0})
        advance(1)


def _finish_index(config, root, objects, entries, order) -> dict[str, Any]:
    """The index of the rendered images (database in a seeded order), written last."""
    database = [entries["database"][i] for i in order.permutation(len(entries["database"]))]
    by_label: dict[str, list[int]] = {}
    for i, e in enumerate(database):
        if e["label"] is not None:
            by_label.setdefault(e["label"], []).append(i)
    for q in entries["query"]:
        q["positives"] = by_label.get(q["label"], [])
    index = {
        "format": INDEX_FORMAT,
        "generator_version": GENERATOR_VERSION,
        "config": _identity(config),
        "image_size": [config.width, config.height],
        "objects": [{"name": n, "source": s} for n, s, _ in objects],
        "protocol": demo_protocol().to_dict(),
        "train": entries["train"],
        "query": entries["query"],
        "database": database,
    }
    atomic_write_bytes(root / INDEX_NAME, json.dumps(index, indent=1).encode("utf-8"))
    return index


def _write_jpeg(path: Path, rgb: np.ndarray) -> str:
    """Encode and write one image; its SHA-256 (recorded in the index)."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise DatasetError(f"demo dataset: cannot encode {path}")
    atomic_write_bytes(path, data.tobytes())
    return hashlib.sha256(data.tobytes()).hexdigest()


def _damaged(root: Path, entries: list[dict[str, Any]]) -> list[str]:
    """The files of `entries` that are missing or whose bytes differ from the index."""
    bad = []
    for e in entries:
        try:
            if hashlib.sha256((root / e["file"]).read_bytes()).hexdigest() != e["sha256"]:
                bad.append(e["file"])
        except FileNotFoundError:
            bad.append(e["file"])
    return bad


def _skimage_data_dir() -> Path:
    import skimage.data

    return Path(os.path.dirname(skimage.data.__file__))


def _read_source(name: str) -> np.ndarray:
    """An RGB uint8 image from skimage's data folder (alpha composited over white)."""
    from skimage import io

    path = _skimage_data_dir() / name
    try:
        image = np.asarray(io.imread(path))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"demo dataset: cannot read scikit-image data file {path}: "
                           f"{exc}") from None
    if image.dtype != np.uint8:
        image = (image / (np.iinfo(image.dtype).max / 255.0)).round().astype(np.uint8)
    if image.ndim == 2:
        return np.ascontiguousarray(np.repeat(image[:, :, None], 3, axis=2))
    if image.shape[2] == 4:
        alpha = image[:, :, 3:4].astype(np.float32) / 255.0
        rgb = image[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        return rgb.round().astype(np.uint8)
    return np.ascontiguousarray(image[:, :, :3])


def _fit(image: np.ndarray, side: int) -> np.ndarray:
    """Resize so the longer side is `side` (INTER_AREA when shrinking)."""
    h, w = image.shape[:2]
    s = side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)


def _load_object(i: int) -> tuple[str, str, np.ndarray]:
    """Object `i`: (name, source, RGB patch with longer side SOURCE_SIDE)."""
    if i < len(CATALOGUE):
        name, file, (x1, y1, x2, y2) = CATALOGUE[i]
        return name, file, _fit(_read_source(file)[y1:y2, x1:x2], SOURCE_SIDE)
    k = i - len(CATALOGUE)
    return f"pattern-{k:03d}", "procedural", _pattern(np.random.default_rng(
        np.random.SeedSequence([_TAG_PATTERN, k])))


def _pattern(rng: np.random.Generator) -> np.ndarray:
    """A procedural object: random coloured shapes and letters on a coloured card."""
    h = int(rng.integers(SOURCE_SIDE * 2 // 3, SOURCE_SIDE + 1))
    img = np.empty((h, SOURCE_SIDE, 3), np.uint8)
    img[:] = rng.integers(0, 256, 3)
    for _ in range(int(rng.integers(6, 12))):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = int(rng.integers(0, 4))
        x, y = int(rng.integers(0, SOURCE_SIDE)), int(rng.integers(0, h))
        r = int(rng.integers(12, 70))
        if kind == 0:
            cv2.circle(img, (x, y), r, color, -1, cv2.LINE_AA)
        elif kind == 1:
            cv2.rectangle(img, (x - r, y - r // 2), (x + r, y + r // 2), color, -1)
        elif kind == 2:
            pts = rng.integers(-r, r, (int(rng.integers(3, 6)), 2)) + [x, y]
            cv2.fillPoly(img, [pts.astype(np.int32)], color, cv2.LINE_AA)
        else:
            text = "".join(chr(int(c)) for c in rng.integers(65, 91, 3))
            cv2.putText(img, text, (x - r, y), cv2.FONT_HERSHEY_SIMPLEX, r / 30.0, color,
                        max(1, r // 10), cv2.LINE_AA)
    return img


def _load_textures() -> list[np.ndarray]:
    """Grey background textures (float32, 0-1)."""
    return [cv2.cvtColor(_read_source(f), cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
            for f in BACKGROUND_FILES]


def _texture_crop(rng: np.random.Generator, textures: list[np.ndarray],
                  w: int, h: int) -> np.ndarray:
    """A random tinted crop of a background texture, (h, w, 3) float32 in 0-1."""
    tex = textures[int(rng.integers(len(textures)))]
    scale = float(rng.uniform(0.5, 1.5))
    th, tw = tex.shape
    cw, ch = min(tw, max(2, round(w / scale))), min(th, max(2, round(h / scale)))
    x, y = int(rng.integers(0, tw - cw + 1)), int(rng.integers(0, th - ch + 1))
    crop = cv2.resize(tex[y:y + ch, x:x + cw], (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if rng.random() < 0.5:
        crop = crop[::-1, :]
    lo, hi = sorted(rng.uniform(0.0, 1.0, 2))
    hi = max(hi, lo + 0.3)
    tint_lo, tint_hi = rng.uniform(0.0, 1.0, 3), rng.uniform(0.0, 1.0, 3)
    crop = (crop - crop.min()) / max(1e-6, float(crop.max() - crop.min()))
    crop = lo + (hi - lo) * crop
    out = tint_lo * (1.0 - crop[:, :, None]) * 0.6 + tint_hi * crop[:, :, None]
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _random_color(rng: np.random.Generator) -> tuple[float, float, float]:
    r, g, b = rng.uniform(0.0, 1.0, 3)
    return float(r), float(g), float(b)


def _background(rng: np.random.Generator, textures: list[np.ndarray],
                size: tuple[int, int]) -> np.ndarray:
    """A cluttered scene without an object: float32 RGB in 0-1."""
    w, h = size
    img = _texture_crop(rng, textures, w, h)
    if rng.random() < 0.5:  # a second texture region
        other = _texture_crop(rng, textures, w, h)
        mask = np.zeros((h, w), np.float32)
        pts = rng.uniform([0, 0], [w, h], (int(rng.integers(3, 7)), 2)).astype(np.int32)
        cv2.fillPoly(mask, [cv2.convexHull(pts)], 1.0, cv2.LINE_AA)
        img = img * (1.0 - mask[:, :, None]) + other * mask[:, :, None]
    for _ in range(int(rng.integers(1, 3))):  # textured clutter quads (not objects)
        qw, qh = int(rng.integers(w // 8, w // 3)), int(rng.integers(h // 8, h // 3))
        patch = _texture_crop(rng, textures, qw, qh)
        quad = rng.uniform([0, 0], [w, h], 2) + rng.uniform(-0.2, 0.2, (4, 2)) * [qw, qh] \
            + np.array([[0, 0], [qw, 0], [qw, qh], [0, qh]], np.float64)
        src = np.array([[0, 0], [qw, 0], [qw, qh], [0, qh]], np.float32)
        _paste(img, patch, cv2.getPerspectiveTransform(src, quad.astype(np.float32)))
    for _ in range(int(rng.integers(6, 16))):  # coloured shapes and lines
        color = _random_color(rng)
        kind = int(rng.integers(0, 4))
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        r = int(rng.integers(3, max(4, min(w, h) // 6)))
        layer = img.copy()
        if kind == 0:
            cv2.circle(layer, (x, y), r, color, -1, cv2.LINE_AA)
        elif kind == 1:
            x2, y2 = x + int(rng.integers(-2 * r, 2 * r)), y + int(rng.integers(-2 * r, 2 * r))
            cv2.rectangle(layer, (x, y), (x2, y2), color, -1)
        elif kind == 2:
            x2, y2 = int(rng.integers(0, w)), int(rng.integers(0, h))
            cv2.line(layer, (x, y), (x2, y2), color, int(rng.integers(1, 5)), cv2.LINE_AA)
        else:
            pts = rng.integers(-r, r + 1, (int(rng.integers(3, 6)), 2)) + [x, y]
            cv2.fillPoly(layer, [pts.astype(np.int32)], color, cv2.LINE_AA)
        alpha = float(rng.uniform(0.5, 1.0))
        img = img * (1.0 - alpha) + layer * alpha
    return img.astype(np.float32)


def _to_cv(h_edge: np.ndarray) -> np.ndarray:
    """A homography in edge coordinates (pixel i spans [i, i+1]) for OpenCV (centres)."""
    t = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]], np.float64)
    t_inv = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]], np.float64)
    return t_inv @ h_edge @ t


def _paste(canvas: np.ndarray, patch: np.ndarray, h_edge: np.ndarray,
           mask: np.ndarray | None = None) -> np.ndarray:
    """Warp `patch` (float RGB) by `h_edge` and blend it into `canvas` in place; return the
    warped coverage mask (float32, 0-1)."""
    h, w = canvas.shape[:2]
    m = _to_cv(h_edge)
    if mask is None:
        mask = np.ones(patch.shape[:2], np.float32)
    warped = cv2.warpPerspective(patch, m, (w, h), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE)
    cover = cv2.warpPerspective(mask, m, (w, h), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    canvas *= 1.0 - cover[:, :, None]
    canvas += warped * cover[:, :, None]
    return cover


def _relight(rng: np.random.Generator, patch: np.ndarray) -> np.ndarray:
    """Gain, bias, gamma, tint and a shading ramp; float RGB 0-1 in and out."""
    gain = rng.uniform(*GAIN)
    bias = rng.uniform(*BIAS) / 255.0
    gamma = rng.uniform(*GAMMA)
    tint = rng.uniform(*TINT, 3)
    h, w = patch.shape[:2]
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = ((xs / max(1, w - 1) - 0.5) * np.cos(angle) + (ys / max(1, h - 1) - 0.5)
            * np.sin(angle)) * 2 * rng.uniform(-SHADING, SHADING)
    out = np.power(patch, gamma) * gain * tint * (1.0 + ramp[:, :, None]) + bias
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _render_view(rng: np.random.Generator, patch: np.ndarray, textures: list[np.ndarray],
                 size: tuple[int, int], config: DemoConfig,
                 clutter: Sequence[np.ndarray] = ()
                 ) -> tuple[np.ndarray, list[float], float]:
    """One view of an object: (RGB uint8 image, box, fraction of the object occluded).
    With `object_scale=small`, 2-4 of the `clutter` objects (never instances) are pasted
    first, anywhere, each as small as the object; the object goes on top."""
    w, h = size
    canvas = _background(rng, textures, size)
    if config.object_scale == "small":
        for i in rng.choice(len(clutter), int(rng.integers(*CLUTTER_OBJECTS)), replace=False):
            _warp_in(rng, canvas, clutter[int(i)], _small_side(rng, size), config)
        side = _small_side(rng, size)
    else:
        side = rng.uniform(*OBJECT_SIZE) * min(w, h)  # sqrt of the object's area
    quad, cover = _warp_in(rng, canvas, patch, side, config)
    occluded = 0.0
    if rng.random() < config.occlusion:
        occluded = _occlude(rng, canvas, cover, quad, textures)
    x1, y1 = np.clip(quad.min(axis=0), 0, [w, h])
    x2, y2 = np.clip(quad.max(axis=0), 0, [w, h])
    box = [round(float(x1), 2), round(float(y1), 2), round(float(x2), 2), round(float(y2), 2)]
    return _finish(rng, canvas), box, round(occluded, 4)


def _small_side(rng: np.random.Generator, size: tuple[int, int]) -> float:
    """sqrt of a small object's area: `SMALL_OBJECT_AREA` of the image's."""
    return float(np.sqrt(rng.uniform(*SMALL_OBJECT_AREA) * size[0] * size[1]))


def _warp_in(rng: np.random.Generator, canvas: np.ndarray, patch: np.ndarray, side: float,
             config: DemoConfig) -> tuple[np.ndarray, np.ndarray]:
    """Relight, rotate, tilt and place `patch` (sqrt of its area: `side` px) wholly inside
    `canvas`, in place; return its quad and coverage mask."""
    h, w = canvas.shape[:2]
    ph, pw = patch.shape[:2]
    obj = _fit(patch, max(8, round(side * max(ph, pw) / np.sqrt(ph * pw))))
    obj = obj.astype(np.float32) / 255.0
    obj = _relight(rng, obj)
    ph, pw = obj.shape[:2]
    src = np.array([[0, 0], [pw, 0], [pw, ph], [0, ph]], np.float64)
    theta = np.deg2rad(rng.uniform(-config.max_rotation, config.max_rotation))
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    jitter = rng.uniform(-PERSPECTIVE, PERSPECTIVE, (4, 2)) * [pw, ph]
    quad = (src - [pw / 2, ph / 2] + jitter) @ rot.T
    extent = quad.max(axis=0) - quad.min(axis=0)
    shrink = min(1.0, 0.95 * w / extent[0], 0.95 * h / extent[1])
    quad *= shrink
    lo, hi = quad.min(axis=0), quad.max(axis=0)
    offset = rng.uniform(-lo, [w, h] - hi)
    quad += offset
    h_edge = cv2.getPerspectiveTransform(src.astype(np.float32), quad.astype(np.float32))
    return quad, _paste(canvas, obj, h_edge.astype(np.float64))


def _occlude(rng: np.random.Generator, canvas: np.ndarray, cover: np.ndarray,
             quad: np.ndarray, textures: list[np.ndarray]) -> float:
    """Cover 5-25 % of the object's pixels with a clutter patch; return the fraction."""
    h, w = canvas.shape[:2]
    area = float(cover.sum())
    target = rng.uniform(*OCCLUSION) * area
    aspect = rng.uniform(0.5, 2.0)
    ow = max(2, int(np.sqrt(target * aspect)))
    oh = max(2, int(target / ow))
    # Centre on a point of the object's outline region so that it reads as an occluder.
    t = rng.uniform(0.25, 0.75)
    i = int(rng.integers(4))
    edge = quad[i] * (1 - t) + quad[(i + 1) % 4] * t
    centre = edge * 0.6 + quad.mean(axis=0) * 0.4
    x0, y0 = int(round(centre[0] - ow / 2)), int(round(centre[1] - oh / 2))
    mask = np.zeros((h, w), np.float32)
    if rng.random() < 0.5:
        cv2.rectangle(mask, (x0, y0), (x0 + ow - 1, y0 + oh - 1), 1.0, -1)
    else:
        cv2.ellipse(mask, (x0 + ow // 2, y0 + oh // 2), (ow // 2, oh // 2),
                    0, 0, 360, 1.0, -1, cv2.LINE_AA)
    if rng.random() < 0.6:
        fill = _texture_crop(rng, textures, w, h)
    else:
        fill = np.empty((h, w, 3), np.float32)
        fill[:] = _random_color(rng)
    canvas *= 1.0 - mask[:, :, None]
    canvas += fill * mask[:, :, None]
    return float((mask * cover).sum() / max(area, 1e-6))


def _finish(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Noise, an occasional slight blur, and conversion to uint8."""
    img = img * 255.0 + rng.normal(0.0, rng.uniform(*NOISE), img.shape)
    if rng.random() < BLUR_PROB:
        img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), float(rng.uniform(0.6, 1.0)))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)
