"""Local features: SIFT keypoints and descriptors (OpenCV), with an optional RootSIFT map.

Every SIFT-based method (bag of words, Hamming embedding, spatial / geometric coding,
COP) starts here, and they share one cached extraction per image list: the artifact
kind is `sift/features` (not the method's name) and its key holds the extraction
parameters (`SiftParams`: the config fields declaring stage `sift`), the content
identity of the images (`RunContext.identify`) and the library versions.

What is stored per image (concatenated over images; `offsets` int64[n+1] gives each
image's rows, as `Cache.map_cached` lays it out), 135 bytes per feature and 1 per image:

- `descriptors` uint8[F, 128]: OpenCV's SIFT descriptor. OpenCV rounds and saturates
  each component to 0..255 even when it returns float32, so uint8 is lossless and a
  quarter of the size. `descriptor_vectors` turns them into float32 (optionally
  RootSIFT) when they are used, so RootSIFT on/off shares one extraction.
- `xq`, `yq` uint16[F]: the keypoint centre in the frame of the *full, original* image
  (see below for crops and resizing), OpenCV convention (pixel centres at integer
  coordinates, x to the right, y down), in steps of 2^e pixels: q = round((x + 0.5) / 2^e).
  `xy_exponent` int8[n] (one per image, not per feature) holds e, the smallest with
  (longer side + 1) ≤ 2^(e + 16), at least −8: 1/128 pixel for a 320-pixel image, 1/32
  for 1,024, 1/2 for 16,384, any size fits. `x`, `y` decode it, q 2^e − 0.5 (exact in
  float32; error at most 2^(e − 1), 1/65,536 of the image's side at most). A fixed quarter
  pixel cost spatial coding 0.6 mAP points on `demo` (320 × 240): positions closer than
  that became equal, and an equality on one side of a match and an order on the other
  breaks its spatial maps.
- `angle_code` uint16[F]: the dominant orientation θ, OpenCV's `KeyPoint.angle` (degrees,
  clockwise in the y-down image frame) × π/180 in [0, 2π), as floor(65,536 θ / 2π).
  Its top byte is exactly the 256-level code HE+WGC's orientation histogram uses
  (`angle_codes`, `wgc_angle_codes`). `angle` decodes it to the centre of its step,
  (code + ½) 2π / 65,536 (error at most 0.003°). Why not the 8-bit code alone: decoded
  angles then differ by whole 1/256 turns, so the orientation differences COP sorts
  into 4, 8 and 16 sectors fall exactly on the sector boundaries one time in 16 and
  land on either side by rounding (COP lost 1.35 mAP points on the real photographs,
  geometric coding 0.51); at 1/65,536 of a turn that is one time in 4,096.
- `scale_code` uint8[F]: OpenCV's `KeyPoint.size` (the diameter of the described
  region, in pixels of the original image) as round(16 log2 size), clipped to 0..255:
  the code of WGC's scale histogram (`scale_codes`). `scale` decodes it, 2^(code / 16)
  (relative error at most 2.2%).

Geometry is 7 bytes per feature where float32 x, y, size, angle and response took 20;
the detector response only ranks keypoints for `max_keypoints` and is not stored.
The angle and scale codes are computed from the float32 values the extraction stored
before (layout 1), so WGC's codes, and every BoW / HE+WGC / VLAD result, are unchanged;
the verifiers see decoded geometry (1/65,536 of the image, of a turn, 1/16 octave:
below SIFT's own localisation noise; README "Compact SIFT storage" has the measurement).

Images larger than `max_image_side` are downscaled before detection (the scale factor
comes from the *full* image, so a query crop and its database image are described at
the same scale); positions and sizes are mapped back to the original pixel frame.
A query whose `crop_box` is not None is described on the crop only, and its keypoint
positions are shifted back to the full-image frame (crop origin = the box's top-left,
rounded down and clipped to the image, as `irbench.datasets.images.crop` does).

RootSIFT (Arandjelović & Zisserman, "Three things everyone should know to improve
object retrieval", CVPR 2012): L1-normalize each SIFT vector, then take the
element-wise square root; the result has unit L2 norm, and the Euclidean distance
between RootSIFT vectors is the Hellinger kernel distance between the SIFT vectors.

SIFT: Lowe, "Distinctive image features from scale-invariant keypoints", IJCV 2004.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import multiprocessing as mp
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from irbench.core.arrays import concat_rows
from irbench.core.cache import DROPPED, WithProgress, array_checksum, merge_artifacts
from irbench.core.config import param, stable_hash
from irbench.core.parallel import parallel_map, shared_pool
from irbench.datasets.base import Box, Image, Query, split_segments
from irbench.datasets.images import crop, read_image
from irbench.errors import IrbenchError

__all__ = [
    "SiftOptions",
    "SIFT_STAGE",
    "SiftParams",
    "Features",
    "sift_params",
    "extract_image",
    "extract_features",
    "features_id",
    "rootsift",
    "descriptor_vectors",
    "angle_codes",
    "stored_angle_codes",
    "wgc_angle_codes",
    "scale_codes",
    "compact_geometry",
    "decode_xy",
    "decode_angle",
    "decode_scale",
    "xy_exponent",
    "drop_descriptors",
    "feature_artifacts",
]

log = logging.getLogger(__name__)

DESCRIPTOR_DIM = 128


SIFT_STAGE = "sift"
"""The cached stage of SIFT extraction (shared by every SIFT method)."""


@dataclass(frozen=True)
class SiftParams:
    """The extraction parameters (stage `sift`): method configs inherit them through
    `SiftOptions`, and `sift_params` detaches them from a config (picklable for
    workers; their dict is part of the features' cache key)."""

    max_keypoints: int = param(
        2000, "keep at most this many keypoints per image, strongest DoG response first "
              "(0 = unlimited); bounds memory and index size on large images",
        minimum=0, stage=SIFT_STAGE)
    contrast_threshold: float = param(
        0.04, "SIFT DoG contrast threshold (OpenCV's default; Lowe's 0.03 on its scale)",
        minimum=0.0, stage=SIFT_STAGE)
    edge_threshold: float = param(10.0, "SIFT edge-response threshold r (Lowe 2004: 10)",
                                  minimum=0.0, stage=SIFT_STAGE)
    sigma: float = param(1.6, "Gaussian sigma of the base octave (Lowe 2004: 1.6)",
                         minimum=0.01, stage=SIFT_STAGE)
    n_octave_layers: int = param(3, "DoG layers per octave (Lowe 2004: 3)", minimum=1,
                                 stage=SIFT_STAGE)
    max_image_side: int = param(
        1024, "downscale images whose longer side exceeds this before detection (0 = never); "
              "coordinates are reported in the original pixel frame", minimum=0,
        stage=SIFT_STAGE)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SiftOptions(SiftParams):
    """Config fields of SIFT extraction and its descriptors; method configs inherit them
    (see `bow.BowConfig`)."""

    rootsift: bool = param(
        True, "use RootSIFT (L1-normalize then square-root; Arandjelovic & Zisserman 2012) "
              "instead of raw SIFT for vocabulary training and quantization",
        stage="vocabulary")


def sift_params(config: Any) -> SiftParams:
    """The `SiftParams` of a config (its fields of stage `sift`)."""
    return SiftParams(**{name: getattr(config, name) for name in SiftParams.__dataclass_fields__})


# -- descriptors ----------------------------------------------------------------------


def rootsift(descriptors: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """RootSIFT: rows L1-normalized, then element-wise square root (float32, unit L2 rows;
    an all-zero row stays zero)."""
    d = np.asarray(descriptors, dtype=np.float32)
    l1 = np.abs(d).sum(axis=1, keepdims=True)
    return np.sqrt(np.abs(d) / np.maximum(l1, eps)).astype(np.float32, copy=False)


def descriptor_vectors(descriptors: np.ndarray, use_rootsift: bool) -> np.ndarray:
    """Stored uint8 SIFT descriptors as the float32 vectors a vocabulary sees."""
    if use_rootsift:
        return rootsift(descriptors)
    return np.asarray(descriptors, dtype=np.float32)


# -- compact geometry -----------------------------------------------------------------

STORAGE_LAYOUT = 4
"""The layout of a stored extraction (part of its cache key): 4 = quantised geometry
(`xq`, `yq` with `xy_exponent`, `angle_code` uint16, `scale_code`); 1 (before) =
float32 columns; 2 and 3 (never released) had 8-bit angles and quarter-pixel positions
(the module docstring says why not)."""

XY_BITS = 16
"""Bits of a stored position."""

MIN_XY_EXPONENT = -8
"""The finest position step, 2^-8 pixel."""

ANGLE_LEVELS = 256
"""Orientation codes per turn of HE+WGC's angle histogram."""

STORED_ANGLE_LEVELS = 65536
"""Orientation steps per turn of the stored `angle_code` (its top byte: `ANGLE_LEVELS`)."""

SCALE_CODES_PER_OCTAVE = 16
"""Scale codes per octave (log2 of the keypoint size)."""


class CacheConsistencyError(IrbenchError):
    """Features extracted again differ from the cached ones later stages were built on."""


def angle_codes(angle: np.ndarray) -> np.ndarray:
    """uint8 orientation codes: angle (radians) · 256 / 2π, rounded down, mod 256."""
    a = np.floor(np.asarray(angle, np.float64) * (ANGLE_LEVELS / (2 * np.pi)))
    return np.mod(a, ANGLE_LEVELS).astype(np.uint8)


def scale_codes(scale: np.ndarray) -> np.ndarray:
    """uint8 scale codes: round(16 · log2(size)), clipped to 0..255 (sizes 1 to 2^16)."""
    s = np.maximum(np.asarray(scale, np.float64), 1e-6)
    code = np.rint(SCALE_CODES_PER_OCTAVE * np.log2(s))
    return np.clip(code, 0, 255).astype(np.uint8)


def stored_angle_codes(angle: np.ndarray) -> np.ndarray:
    """uint16 orientation codes: angle (radians) · 65,536 / 2π, rounded down, mod 65,536.
    Scaling by a power of two is exact in floating point, so `wgc_angle_codes` of these
    equals `angle_codes` of the same angles, bit for bit."""
    a = np.floor(np.asarray(angle, np.float64) * (STORED_ANGLE_LEVELS / (2 * np.pi)))
    return np.mod(a, STORED_ANGLE_LEVELS).astype(np.uint16)


def wgc_angle_codes(stored: np.ndarray) -> np.ndarray:
    """The 256-level codes of HE+WGC (`angle_codes`) of stored uint16 orientation codes."""
    return (np.asarray(stored, np.uint16) >> 8).astype(np.uint8)


def xy_exponent(width: int, height: int) -> int:
    """e of an image's position step 2^e: the smallest with (side + 1) ≤ 2^(e + 16), side
    its longer side in pixels, at least `MIN_XY_EXPONENT`."""
    side = max(int(width), int(height), 1)
    return max(MIN_XY_EXPONENT, math.ceil(math.log2(side + 1)) - XY_BITS)


def _xy_codes(v: np.ndarray, exponent: int, path: Any) -> np.ndarray:
    q = np.rint((np.asarray(v, np.float64) + 0.5) * 2.0 ** -exponent)
    if len(q) and (q.min() < 0 or q.max() > np.iinfo(np.uint16).max):
        raise ValueError(f"{path}: a keypoint lies outside the image "
                         f"({float(np.min(v)):.1f} to {float(np.max(v)):.1f} px)")
    return q.astype(np.uint16)


def compact_geometry(arrays: dict[str, np.ndarray], path: Any = "") -> dict[str, np.ndarray]:
    """The stored form of `extract_image`'s arrays: descriptors, and geometry quantised
    as the module docstring says (codes computed from the float32 values)."""
    height, width = (int(v) for v in arrays["image_shape"])
    e = xy_exponent(width, height)
    return {"descriptors": arrays["descriptors"],
            "xq": _xy_codes(arrays["x"], e, path),
            "yq": _xy_codes(arrays["y"], e, path),
            "angle_code": stored_angle_codes(np.asarray(arrays["angle"], np.float32)),
            "scale_code": scale_codes(np.asarray(arrays["scale"], np.float32)),
            "xy_exponent": np.array([e], np.int8)}


def decode_xy(codes: np.ndarray, exponents: np.ndarray | int) -> np.ndarray:
    """Stored positions as float32 pixels, q 2^e − 0.5 (exact), `exponents` the e of
    each code's image (broadcast)."""
    step = np.exp2(np.asarray(exponents, np.float32))
    return np.asarray(codes, np.float32) * step - np.float32(0.5)


def decode_angle(codes: np.ndarray) -> np.ndarray:
    """Stored orientation codes as float32 radians, the centre of each 1/65,536 turn."""
    return ((np.asarray(codes, np.float32) + np.float32(0.5))
            * np.float32(2 * np.pi / STORED_ANGLE_LEVELS)).astype(np.float32)


def decode_scale(codes: np.ndarray) -> np.ndarray:
    """Scale codes as float32 keypoint sizes, 2^(code / 16)."""
    return np.exp2(np.asarray(codes, np.float32) / np.float32(SCALE_CODES_PER_OCTAVE))


# -- one image ------------------------------------------------------------------------

FEATURE_BLOCK = 16384
"""Features turned into float32 vectors at a time (quantisation, Hamming signatures): a
block and RootSIFT's temporaries take about 4 × 16,384 × 512 B = 32 MiB, whatever the
number of features (a block of 65,536 held about 120 MiB more at the peak)."""

_EMPTY = {
    "descriptors": np.zeros((0, DESCRIPTOR_DIM), np.uint8),
    "x": np.zeros(0, np.float32),
    "y": np.zeros(0, np.float32),
    "scale": np.zeros(0, np.float32),
    "angle": np.zeros(0, np.float32),
    "response": np.zeros(0, np.float32),
}

_STORED = {
    "descriptors": np.zeros((0, DESCRIPTOR_DIM), np.uint8),
    "xy_exponent": np.zeros(0, np.int8),
    "xq": np.zeros(0, np.uint16),
    "yq": np.zeros(0, np.uint16),
    "angle_code": np.zeros(0, np.uint16),
    "scale_code": np.zeros(0, np.uint8),
}
"""The stored columns of an extraction (layout 2), empty."""


def _detector(params: SiftParams):
    return cv2.SIFT_create(
        nfeatures=max(0, int(params.max_keypoints)),
        nOctaveLayers=int(params.n_octave_layers),
        contrastThreshold=float(params.contrast_threshold),
        edgeThreshold=float(params.edge_threshold),
        sigma=float(params.sigma),
    )


def _crop_origin(box: Box, width: int, height: int) -> tuple[int, int]:
    """Top-left pixel of `crop(image, box)` (the box rounded down, clipped to the image)."""
    x1, y1 = box[0], box[1]
    return max(0, int(math.floor(x1))), max(0, int(math.floor(y1)))


def extract_image(path: Any, crop_box: Box | None, params: SiftParams) -> dict[str, np.ndarray]:
    """SIFT on one image file (gray), optionally on `crop_box` only; arrays as documented
    in the module docstring, coordinates in the full original image's pixel frame.

    Raises `ImageReadError` naming the file when it is missing or cannot be decoded.
    """
    gray = read_image(path, gray=True)
    height, width = gray.shape[:2]
    factor = 1.0
    side = int(params.max_image_side)
    if side > 0 and max(height, width) > side:
        factor = side / max(height, width)
        new_w = max(1, int(round(width * factor)))
        new_h = max(1, int(round(height * factor)))
        gray = cv2.resize(gray, (new_w, new_h), interpolation=cv2.INTER_AREA)
    sx = width / gray.shape[1]
    sy = height / gray.shape[0]
    ox = oy = 0
    if crop_box is not None:
        # Validate the box on the original image (same error as read_image would give),
        # then crop the (possibly resized) image to the box in its own frame.
        crop(np.empty((height, width), np.uint8), crop_box, path=path)
        scaled = (crop_box[0] / sx, crop_box[1] / sy, crop_box[2] / sx, crop_box[3] / sy)
        ox, oy = _crop_origin(scaled, gray.shape[1], gray.shape[0])
        gray = crop(gray, scaled, path=path)
    keypoints, descriptors = _detector(params).detectAndCompute(gray, None)
    shape = np.array([height, width], np.int64)
    if not keypoints or descriptors is None:
        return {**{k: v.copy() for k, v in _EMPTY.items()}, "image_shape": shape}
    response = np.array([kp.response for kp in keypoints], np.float32)
    if params.max_keypoints > 0 and len(keypoints) > params.max_keypoints:
        # OpenCV keeps ties at the cut (and duplicate orientations), so it may return a
        # few more than asked: keep the strongest, the earlier one among equals.
        keep = np.sort(np.argsort(-response, kind="stable")[: params.max_keypoints])
        keypoints = [keypoints[i] for i in keep]
        descriptors = descriptors[keep]
        response = response[keep]
    pts = np.array([kp.pt for kp in keypoints], np.float64).reshape(-1, 2)
    # Pixel centres: original = (resized + 0.5) * s - 0.5 (identity when s == 1).
    x = (pts[:, 0] + ox + 0.5) * sx - 0.5
    y = (pts[:, 1] + oy + 0.5) * sy - 0.5
    size = np.array([kp.size for kp in keypoints], np.float64) * math.sqrt(sx * sy)
    angle = np.deg2rad(np.array([kp.angle for kp in keypoints], np.float64)) % (2 * math.pi)
    return {
        "descriptors": np.clip(np.rint(descriptors), 0, 255).astype(np.uint8),
        "x": x.astype(np.float32),
        "y": y.astype(np.float32),
        "scale": size.astype(np.float32),
        "angle": angle.astype(np.float32),
        "response": response,
        "image_shape": shape,
    }


def _worker(task: tuple[str, Box | None, SiftParams]) -> dict[str, np.ndarray]:
    """Process-pool entry point (module level, so it pickles): one image's stored arrays."""
    if mp.parent_process() is not None:  # a worker process: one OpenCV thread each
        cv2.setNumThreads(1)
    path, crop_box, params = task
    return compact_geometry(extract_image(path, crop_box, params), path)


# -- image lists ----------------------------------------------------------------------


@dataclass
class Features:
    """SIFT features of an image list: the stored per-feature columns (module docstring)
    and per-image `offsets`; `id` names the cached extraction (`features_id`). `x`, `y`,
    `angle`, `scale` decode a whole column (float32): code that touches only some rows
    (the verifiers) decodes those rows (`verification.StoredGeometry`).

    `descriptors` are read when first used: a run made with `drop_descriptors` deleted
    them from the cache once it was done (`drop_descriptors`), and then they are
    extracted again here, checked equal to the ones deleted (`restore`)."""

    offsets: np.ndarray
    stored_descriptors: Any
    xq: np.ndarray
    yq: np.ndarray
    angle_code: np.ndarray
    scale_code: np.ndarray
    xy_exponent: np.ndarray
    id: str = ""
    restore: Callable[[], Any] | None = field(default=None, repr=False)
    """Extracts the descriptors again when the cache no longer holds them."""

    @classmethod
    def from_artifact(cls, art: dict[str, Any], id: str = "",
                      restore: Callable[[], Any] | None = None) -> Features:
        # An empty image list stores only `offsets`: fall back to empty columns. Columns
        # stay as stored (memory-mapped, or rows of several segments) when of the right
        # dtype: nothing is copied until it is used.
        get = {k: art.get(k, v) for k, v in _STORED.items()}
        offsets = np.asarray(art["offsets"], np.int64)
        if restore is None and "descriptors" not in art and offsets[-1] > 0:
            raise ValueError("the artifact holds no descriptors (dropped?): pass `restore`")
        return cls(offsets=offsets,
                   stored_descriptors=None if restore is not None else _column(
                       get["descriptors"], np.uint8, DESCRIPTOR_DIM),
                   xq=_column(get["xq"], np.uint16), yq=_column(get["yq"], np.uint16),
                   angle_code=_column(get["angle_code"], np.uint16),
                   scale_code=_column(get["scale_code"], np.uint8),
                   xy_exponent=np.asarray(get["xy_exponent"], np.int8), id=id,
                   restore=restore)

    @property
    def descriptors(self) -> Any:
        """uint8[F, 128], memory-mapped (extracted again first if they were dropped)."""
        if self.stored_descriptors is None:
            if self.restore is None:
                raise RuntimeError("these features have no descriptors")
            self.stored_descriptors = _column(self.restore(), np.uint8, DESCRIPTOR_DIM)
        return self.stored_descriptors

    def feature_exponents(self) -> np.ndarray:
        """The position exponent of every feature's image, int8[F]."""
        return np.repeat(self.xy_exponent, self.counts())

    @property
    def x(self) -> np.ndarray:
        return decode_xy(self.xq, self.feature_exponents())

    @property
    def y(self) -> np.ndarray:
        return decode_xy(self.yq, self.feature_exponents())

    @property
    def angle(self) -> np.ndarray:
        return decode_angle(self.angle_code)

    @property
    def scale(self) -> np.ndarray:
        return decode_scale(self.scale_code)

    @property
    def n_images(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_features(self) -> int:
        return int(self.offsets[-1])

    def counts(self) -> np.ndarray:
        """Features per image, int64[n]."""
        return np.diff(self.offsets)

    def image_of_feature(self) -> np.ndarray:
        """The image index of every feature, int64[F]."""
        return np.repeat(np.arange(self.n_images, dtype=np.int64), self.counts())

    def image(self, i: int) -> dict[str, np.ndarray]:
        """The stored arrays of image `i`."""
        s = slice(int(self.offsets[i]), int(self.offsets[i + 1]))
        return {k: (self.xy_exponent[i:i + 1] if k == "xy_exponent" else getattr(self, k)[s])
                for k in _STORED}


def _column(values: Any, dtype: type, width: int | None = None) -> Any:
    """`values` as a column of `dtype` (rows of `width`): as it is when it already is one
    (an array, memory-mapped or not, or a `ConcatRows`), else converted."""
    if hasattr(values, "shape") and getattr(values, "dtype", None) == np.dtype(dtype) and (
            len(values.shape) == 1 if width is None else tuple(values.shape[1:]) == (width,)):
        return values
    out = np.asarray(values, dtype)
    return out if width is None else out.reshape(-1, width)


def _crop_box_of(item: Image | Query) -> Box | None:
    return item.crop_box if isinstance(item, Query) else None


FEATURES_KIND = "sift/features"


def _parts(images: Sequence[Image | Query], params: SiftParams, context: Any
           ) -> list[tuple[Any, list[Image | Query], dict[str, Any]]]:
    """(segment or None, images, cache key) of each cached part of an image list: its
    shared segments (distractors, cached once for every base dataset) and the rest."""
    from irbench.methods.base import library_versions

    out = []
    for segment, start, stop in split_segments(images):
        part = tuple(images[start:stop])
        key = {"sift": params.to_dict(), "images": context.identify(part),
               "libraries": library_versions(), "layout": STORAGE_LAYOUT}
        out.append((segment, part, key))
    return out


def features_id(images: Sequence[Image | Query], params: SiftParams, context: Any) -> str:
    """The id of the extraction of `images` (what later stages put in their keys),
    known without computing or loading it."""
    ids = [context.cache.key_of(FEATURES_KIND, key) for _, _, key in
           _parts(images, params, context)]
    return ids[0] if len(ids) == 1 else stable_hash(ids)


def extract_features(images: Sequence[Image | Query], params: SiftParams, context: Any, *,
                     description: str = "SIFT", shard_size: int = 256) -> Features:
    """SIFT features of `images` (queries described on their `crop_box`), computed in
    `context.workers` processes (one pool for every shard: `shared_pool`), cached (resumably, in shards) under `sift/features`;
    the shards run on `context.executor`.

    Unreadable images raise one `BadImagesError` listing them all; an image with no
    keypoints gets zero rows. A part whose descriptors were dropped
    (`drop_descriptors`) is extracted again when its descriptors are first read.
    """
    def compute_chunk(chunk: Sequence[Image | Query], advance: Any
                      ) -> list[dict[str, np.ndarray]]:
        tasks = [(str(im.path), _crop_box_of(im), params) for im in chunk]
        return parallel_map(_worker, tasks, workers=context.workers, chunksize=4,
                            advance=advance)  # the bar moves every 4 images

    def extract(segment: Any, part: Sequence[Image | Query], key: dict[str, Any]) -> Any:
        return context.cache.map_cached(
            FEATURES_KIND, key, part, WithProgress(compute_chunk), shard_size=shard_size,
            progress=context.progress, executor=context.executor,
            description=description if segment is None else f"{description} ({segment.name})")

    parts = _parts(images, params, context)
    with shared_pool():
        arts = [extract(*p) for p in parts]
    dropped = [i for i, a in enumerate(arts)
               if "descriptors" not in a and "descriptors" in a.get(DROPPED, {})]

    def restore() -> Any:
        """Extract the parts whose descriptors were dropped again, check that they are
        the same (the checksums the cache kept), and return every part's descriptors."""
        columns = [a.get("descriptors", _STORED["descriptors"]) for a in arts]
        with shared_pool():
            for i in dropped:
                segment, part, key = parts[i]
                old = arts[i]
                log.info("the SIFT descriptors of %s were dropped from the cache "
                         "(drop_descriptors): extracting %d images again", _label(segment, part),
                         len(part))
                context.cache.forget(FEATURES_KIND, old.id)
                new = extract(segment, part, key)
                expected = old[DROPPED]["descriptors"]
                if array_checksum(np.asarray(new["descriptors"])) != expected or not np.array_equal(
                        np.asarray(new["offsets"]), np.asarray(old["offsets"])):
                    raise CacheConsistencyError(
                        f"SIFT extracted again for {_label(segment, part)} differs from the "
                        f"extraction whose descriptors were dropped (cache entry {old.id[:12]} "
                        "under sift/features); the words and signatures cached from it no "
                        f"longer match: delete the cache folder {context.cache.root} or run "
                        "with --overwrite")
                columns[i] = new["descriptors"]
        return columns[0] if len(columns) == 1 else concat_rows(columns)

    art = arts[0] if len(arts) == 1 else merge_artifacts(
        [{k: v for k, v in a.items() if k != "descriptors"} for a in arts] if dropped
        else arts)
    ids = [a.id for a in arts]
    return Features.from_artifact(art, ids[0] if len(ids) == 1 else stable_hash(ids),
                                  restore=restore if dropped else None)


def _label(segment: Any, part: Sequence[Image | Query]) -> str:
    return (f"segment {segment.name}" if segment is not None else
            f"{len(part)} images from {part[0].path}" if part else "no images")


def feature_artifacts(images: Sequence[Image | Query], params: SiftParams, context: Any
                      ) -> list[str]:
    """The cache keys (under `FEATURES_KIND`) of the extraction of `images`, one per part
    (`drop_descriptors` drops theirs)."""
    return [context.cache.key_of(FEATURES_KIND, key) for _, _, key in
            _parts(images, params, context)]


def drop_descriptors(images: Sequence[Image | Query], params: SiftParams, context: Any
                     ) -> int:
    """Delete the stored descriptors of the extraction of `images` (128 of the 135 bytes
    per feature), keeping its geometry; returns the bytes freed. The words, Hamming
    signatures and VLAD vectors computed from them stay cached; a stage that needs the
    descriptors again (a new vocabulary, say) extracts SIFT again (`extract_features`)."""
    return sum(context.cache.drop_arrays(FEATURES_KIND, key_hash, ["descriptors"])
               for key_hash in feature_artifacts(images, params, context))
