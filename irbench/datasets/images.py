"""Reading images: one function, a clear error for a missing or undecodable file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from irbench.datasets.base import Box
from irbench.errors import ImageReadError

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
