"""Reading images: one function, a clear error for a missing or undecodable file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from irbench.datasets.base import Box
from irbench.errors import BadImagesError, ImageReadError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def read_image(path: str | Path, box: Box | None = None, *, gray: bool = False) -> np.ndarray:
    """Decode an image as uint8 RGB (H, W, 3) or gray (H, W), cropped to `box` if given.

    The box (x1, y1, x2, y2, pixels) is clipped to the image and rounded outwards; a box
    that is empty after clipping is an error naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "file not found")
    data = np.fromfile(path, dtype=np.uint8)
    flag = cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR
    image = cv2.imdecode(data, flag) if data.size else None
    if image is None:
        raise ImageReadError(path, "not a decodable image (corrupt or unsupported format)")
    if not gray:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if box is not None:
        image = crop(image, box, path=path)
    return image


def crop(image: np.ndarray, box: Box, *, path: str | Path = "<array>") -> np.ndarray:
    """Crop to (x1, y1, x2, y2), clipped to the image, rounded outwards."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = box
    ix1, iy1 = max(0, int(np.floor(x1))), max(0, int(np.floor(y1)))
    ix2, iy2 = min(w, int(np.ceil(x2))), min(h, int(np.ceil(y2)))
    if ix2 <= ix1 or iy2 <= iy1:
        raise ImageReadError(path, f"box {tuple(box)} is empty inside the {w}x{h} image")
    return image[iy1:iy2, ix1:ix2]


def jpeg_problem(path: str | Path) -> str | None:
    """A cheap integrity check that reads only both ends of the file: a JPEG must start
    with the SOI marker and have the EOI marker near its end (a truncated download lacks
    it, yet OpenCV still decodes the top of the picture). None when nothing is wrong."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(2)
            fh.seek(max(0, size - 4096))
            tail = fh.read()
    except FileNotFoundError:
        return "file not found"
    except OSError as exc:
        return f"cannot be read ({exc})"
    if size == 0:
        return "empty file"
    if head != b"\xff\xd8":
        return "not a JPEG (no start-of-image marker)"
    if b"\xff\xd9" not in tail:
        return "truncated JPEG (no end-of-image marker)"
    return None


def _decode_problem(task: tuple[str, Box | None]) -> str | None:
    path, box = task
    try:
        read_image(path, box)
    except ImageReadError as exc:
        return exc.problem
    return None


def check_decodable(images: Sequence[Any], *, workers: int = 1) -> None:
    """Decode every image (each file and box once, in `workers` processes) and raise one
    `BadImagesError` listing all that fail: run before a training that reads them epoch
    after epoch, so every bad file is reported at once, before any work."""
    from irbench.core.parallel import parallel_map

    tasks = list(dict.fromkeys((str(im.path), im.box) for im in images))
    problems = parallel_map(_decode_problem, tasks, workers=workers, chunksize=16)
    bad = [(path, why) for (path, _), why in zip(tasks, problems, strict=True) if why]
    if bad:
        raise BadImagesError(bad)
