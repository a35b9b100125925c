"""An example irbench plugin: a global HSV colour histogram (Swain & Ballard, IJCV 1991)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from irbench import GlobalDescriptorMethod, Image, Query, param, read_image


@dataclass(frozen=True)
class Config:
    """Every field feeds the cached `features` stage (`GlobalDescriptorMethod.stages`)."""

    hue_bins: int = param(16, "histogram bins over hue", minimum=1, stage="features")
    saturation_bins: int = param(4, "histogram bins over saturation", minimum=1,
                                 stage="features")
    value_bins: int = param(4, "histogram bins over value (brightness)", minimum=1,
                            stage="features")
    sqrt: bool = param(True, "square-root the L1-normalized histogram (Hellinger kernel)",
                       stage="features")


class ColorHistogram(GlobalDescriptorMethod):
    name = "color-histogram"
    description = "Global HSV colour histogram, cosine similarity (example plugin)."
    Config = Config

    def encode(self, images: Sequence[Image | Query]) -> np.ndarray:
        c = self.config
        out = np.zeros((len(images), c.hue_bins * c.saturation_bins * c.value_bins), np.float32)
        with self.context.progress.task(f"{self.name}: describing", total=len(images)) as step:
            for i, im in enumerate(images):
                box = im.crop_box if isinstance(im, Query) else None
                hsv = cv2.cvtColor(read_image(im.path, box), cv2.COLOR_RGB2HSV)
                hist = cv2.calcHist([hsv], [0, 1, 2], None,
                                    [c.hue_bins, c.saturation_bins, c.value_bins],
                                    [0, 180, 0, 256, 0, 256]).reshape(-1)
                hist /= max(float(hist.sum()), 1.0)
                out[i] = np.sqrt(hist) if c.sqrt else hist
                step(1)
        return out
