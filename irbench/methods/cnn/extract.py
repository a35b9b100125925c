"""Batched CNN feature extraction: files on disk -> features, decoding and resizing in a
thread pool while the network computes.

`inference_mode`, optional channels-last memory format, optional bf16 autocast
(`precision=bf16`), any torch device. Images arrive as uint8 tensors; the backbone
normalizes them on the device.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from irbench.core.progress import NULL_PROGRESS, Progress
from irbench.datasets.base import Box
from irbench.datasets.images import read_image
from irbench.errors import BadImagesError, ImageReadError


@dataclass(frozen=True)
class Resize:
    """`square`: resize to size x size (FC7's fixed input, the seed paper's 224 x 224);
    `max_side`: scale down so the longer side is at most `size`, keeping the aspect ratio
    (pooled convolutional descriptors; smaller images are not enlarged)."""

    mode: str
    size: int

    def __call__(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        if self.mode == "square":
            out = (self.size, self.size)
        else:
            scale = min(1.0, self.size / max(h, w))
            out = (max(1, round(w * scale)), max(1, round(h * scale)))
        shrink = out[0] * out[1] < w * h
        return cv2.resize(image, out, interpolation=cv2.INTER_AREA if shrink
                          else cv2.INTER_LINEAR)


class ImageFiles(torch.utils.data.Dataset):
    """(path, crop box) items -> (index, uint8 CHW tensor), decoded and resized."""

    def __init__(self, items: Sequence[tuple[str, Box | None]], resize: Resize) -> None:
        self.items = list(items)
        self.resize = resize

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor]:
        path, box = self.items[i]
        image = self.resize(read_image(path, box))
        return i, torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def batches(items: Sequence[tuple[str, Box | None]], resize: Resize, *, batch_size: int,
            workers: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of (indices, uint8 images) in input order; variable-size images (`max_side`)
    come one by one. With workers > 1, images are decoded and resized by a pool of that
    many threads, up to four batches ahead of the consumer: OpenCV releases the GIL while
    it decodes and resizes, so this overlaps with the network's compute without the start
    cost and pickling of worker processes.

    An unreadable image is left out of its batch; once every readable one is yielded, one
    `BadImagesError` lists them all. Other exceptions propagate at once."""
    data = ImageFiles(items, resize)
    size = batch_size if resize.mode == "square" else 1
    n = len(data)
    unreadable: list[ImageReadError] = []

    def readable(loaded: list[tuple[int, torch.Tensor] | ImageReadError]
                 ) -> list[tuple[int, torch.Tensor]]:
        unreadable.extend(s for s in loaded if isinstance(s, ImageReadError))
        return [s for s in loaded if not isinstance(s, ImageReadError)]

    if workers <= 1:
        for start in range(0, n, size):
            samples = readable([_load(data, i) for i in range(start, min(n, start + size))])
            if samples:
                yield _collate(samples)
    else:
        ahead = 4 * size + workers
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
            pending: deque = deque()
            next_item = 0
            try:
                while next_item < n or pending:
                    while next_item < n and len(pending) < ahead:
                        pending.append(pool.submit(_load, data, next_item))
                        next_item += 1
                    take = min(size, len(pending))
                    samples = readable([pending.popleft().result() for _ in range(take)])
                    if samples:
                        yield _collate(samples)
            finally:  # stopped early (an error, Ctrl-C): decode nothing more
                for future in pending:
                    future.cancel()
    if unreadable:
        raise BadImagesError.combine(unreadable)


def _load(data: ImageFiles, i: int) -> tuple[int, torch.Tensor] | ImageReadError:
    """`data[i]`, or the ImageReadError it raised."""
    try:
        return data[i]
    except ImageReadError as exc:
        return exc


def _collate(samples: list[tuple[int, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.tensor([i for i, _ in samples], dtype=torch.int64),
            torch.stack([t for _, t in samples]))


def autocast(device: torch.device, precision: str):
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                          enabled=precision == "bf16")


def prepare(net: torch.nn.Module, device: str, channels_last: bool) -> torch.nn.Module:
    net = net.to(device).eval()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net


def extract(net: torch.nn.Module, describe: Callable[[torch.Tensor], torch.Tensor],
            items: Sequence[tuple[str, Box | None]], resize: Resize, *, batch_size: int = 16,
            workers: int = 1, device: str = "cpu", precision: str = "fp32",
            channels_last: bool = True, progress: Progress = NULL_PROGRESS,
            description: str = "CNN features") -> np.ndarray:
    """`describe(batch)` (float 0..255 NCHW on `device` -> (B, D)) for every item,
    as float32 (n, D), in input order. Unreadable images raise one `BadImagesError`
    listing them all, after the readable ones are described."""
    dev = torch.device(device)
    out: list[np.ndarray] = [None] * len(items)  # type: ignore[list-item]
    with progress.task(description, total=len(items)) as advance, torch.inference_mode():
        for idx, images in batches(items, resize, batch_size=batch_size, workers=workers):
            x = images.to(dev, non_blocking=True).float()
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(dev, precision):
                feats = describe(x)
            feats = feats.float().cpu().numpy()
            for row, i in enumerate(idx.tolist()):
                out[i] = feats[row]
            advance(len(idx))
    if not out:
        return np.zeros((0, 0), np.float32)
    return np.stack(out).astype(np.float32, copy=False)
