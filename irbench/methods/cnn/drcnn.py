"""`drcnn`: the deep region CNN of Mei et al. 2018 (the seed paper).

Sec. 3.1.1: a Faster R-CNN fine-tuned on the dataset's train boxes
(`irbench.methods.cnn.detector`: py-faster-rcnn's VGG16 recipe, N classes) detects object
regions; Sec. 3.1.2: the top-K boxes by score (after NMS) are cropped from the image,
resized to 224 x 224 and described by the FC7 of ImageNet VGG16 (`feature_backbone`,
`feature_weights`), each L2-normalized; Sec. 3.2: a query goes through the same detector
and network ("Given the query instance image, we extract the visual features based on the
fine-tuned Faster R-CNN and CNN": `query_regions=detect`, inside the query's crop when
the protocol crops), the K region features of an image are fused by concatenation (K x
4,096-D), mean- or max-pooling (4,096-D), L2-normalized, and images are ranked by cosine
similarity.

One extraction serves every (K, fusion): the detections and region features of the
`max_regions` best boxes are cached per image, and `regions` / `fusion` only select and
fuse them, so `--sweep regions=1,2,3,4,5 --sweep fusion=concat,mean,max` runs detection
and region extraction once.

Choices the paper leaves open, with their defaults: fewer than K boxes after NMS ->
`padding=repeat_best` repeats the best box (`whole_image` adds the whole image); no box
at all -> the whole image. `query_regions=box` describes a query by its given box
(repeated K times) instead of detecting in it. The class-score variant (`class_scores=
true`, the paper's 32.2% row of Sec. 5, whose combination the paper does not spell out)
appends the N-class detector's softmax class-score vector of the best box, L2-normalized
and weighted by `class_score_weight`, to the fused feature.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from irbench.core.config import param
from irbench.core.search import l2_normalize, search
from irbench.datasets.base import Box, Image, Query, split_segments
from irbench.datasets.images import check_decodable, crop, read_image
from irbench.errors import BadImagesError, ConfigError, ImageReadError
from irbench.methods.base import NO_STAGE, QUERY_STAGE, Method, Stage
from irbench.methods.cnn.backbones import BackboneNet, load_backbone
from irbench.methods.cnn.checkpoint import checkpoint_path
from irbench.methods.cnn.detector import (
    FPN,
    REGIONS,
    DetectorConfig,
    build_detector,
    class_scores_of,
    convergence_problems,
    describe_detector,
    detect,
    head_of,
    iou,
    loss_ends,
    model_from_arrays,
    pad_regions,
    state_arrays,
    train_check,
    train_detector,
)
from irbench.methods.cnn.extract import Resize, autocast, prepare

log = logging.getLogger(__name__)

FUSIONS = ("concat", "mean", "max")
_WARNED: set[str] = set()
"""Detectors whose convergence warning this process has shown."""


@dataclass(frozen=True)
class DrcnnConfig(DetectorConfig):
    """DR-CNN's config: the detector's fields (`DetectorConfig`: py-faster-rcnn's
    defaults) and those of the regions, their features and their fusion."""

    regions: int = param(1, "K: regions per image fused (the paper: 1..5; best K=2)",
                         minimum=1, stage=QUERY_STAGE)
    fusion: str = param("concat", "concat | mean | max (Sec. 3.2)", choices=FUSIONS,
                        stage=QUERY_STAGE)
    max_regions: int = param(5, "regions detected, described and cached per image (K <= it)",
                             minimum=1, stage=REGIONS)
    padding: str = param("repeat_best", "fewer than K boxes: repeat_best | whole_image",
                         choices=("repeat_best", "whole_image"), stage=REGIONS)
    query_regions: str = param("detect", "detect: queries go through the detector (Sec. "
                                         "3.2); box: their given box",
                               choices=("detect", "box"), stage="query_regions")
    class_scores: bool = param(False, "append the N-class detector's class-score vector "
                                      "(Sec. 5)", stage=REGIONS)
    class_score_weight: float = param(1.0, "weight of the class-score vector", minimum=0.0,
                                      stage=QUERY_STAGE)
    feature_backbone: str = param("", "region-feature network (empty: the detector's "
                                      "backbone; the paper: ImageNet VGG16)", stage=REGIONS)
    feature_weights: str = param("imagenet", "region-feature weights: imagenet | none | PATH",
                                 stage=REGIONS)
    image_size: int = param(224, "regions resized to this square before FC7", minimum=16,
                            stage=REGIONS)
    fc7_after_relu: bool = param(True, "FC7 after its ReLU", stage=REGIONS)
    precision: str = param("fp32", "region features: fp32 | bf16", choices=("fp32", "bf16"),
                           stage=REGIONS)
    batch_size: int = param(20, "region crops per forward pass", minimum=1, stage=NO_STAGE)


class DrcnnMethod(Method):
    """Deep region CNN: fine-tuned Faster R-CNN, top-K region FC7 features, fusion."""

    name = "drcnn"
    description = ("Deep region CNN (the paper's): fine-tuned Faster R-CNN, top-K regions, "
                   "FC7 per region, concat/mean/max fusion")
    Config = DrcnnConfig
    contract_overrides: ClassVar[dict[str, Any]] = {
        "backbone": "efficientnet-lite0", "regions": 2, "max_regions": 2, "min_size": 160,
        "max_size": 160, "rpn_pre_nms_top_n_train": 100, "rpn_post_nms_top_n_train": 50,
        "rpn_pre_nms_top_n_test": 100, "rpn_post_nms_top_n_test": 50,
        "anchor_sizes": (32, 64, 128), "box_batch_size_per_image": 32,
        "detector_iterations": 4}
    stages: ClassVar[Mapping[str, Stage]] = {
        "detector": Stage(seeded=True),
        "regions": Stage(after=("detector",)),
        "query_regions": Stage(after=("regions",)),
    }
    """The fine-tuned detector; the regions (boxes and features) of database images;
    those of queries, which also depend on `query_regions`."""

    def untrained(self) -> bool:
        """Random weights for the detector or for the region features."""
        return "none" in (str(self.config.weights).lower(),
                          str(self.config.feature_weights).lower())

    def __init__(self, config: Any = None, context: Any = None) -> None:
        super().__init__(config, context)
        cfg = self.config
        if cfg.regions < 1 or cfg.regions > cfg.max_regions:
            raise ConfigError(f"regions={cfg.regions} must be in [1, max_regions="
                              f"{cfg.max_regions}]")
        self._detector = None
        self._detector_arrays: dict[str, Any] | None = None
        self._features_net: BackboneNet | None = None
        self._classes: list[str] = []

    # -- fit: the detector ----------------------------------------------------------------

    def fit(self, train: Sequence[Image]) -> None:
        cfg = self.config
        boxed = [im for im in train if im.box is not None]
        if not boxed:
            raise ConfigError("drcnn fine-tunes its detector on the train split's boxes; "
                              "this dataset's train split has no boxes")
        if cfg.detector_classes == "per_label":
            unlabelled = [im.id for im in boxed if not im.label]
            if unlabelled:
                raise ConfigError(
                    f"drcnn: detector_classes=per_label gives the detector one class per "
                    f"train label, but {len(unlabelled)} boxed train image(s) have no "
                    f"label (e.g. {unlabelled[0]}); set detector_classes=agnostic")
            self._classes = sorted({im.label for im in boxed})
        else:
            self._classes = []
        if cfg.class_scores and len(self._classes) < 2:
            raise ConfigError("class_scores=true needs the N-class detector "
                              "(detector_classes=per_label) and >= 2 train labels")
        class_of = {c: i + 1 for i, c in enumerate(self._classes)}
        inputs = {"train": self.context.identify(tuple(boxed)), "classes": self._classes,
                  "box_head": head_of(cfg.backbone)}
        checkpoint = checkpoint_path(self, "detector", inputs)

        def compute() -> dict[str, Any]:
            check_decodable(boxed, workers=self.context.workers)
            model, history = train_detector(cfg, boxed, class_of, seed=self.context.seed,
                                            device=self.context.device, checkpoint=checkpoint,
                                            progress=self.context.progress)
            recall = train_check(model, boxed, seed=self.context.seed,
                                 device=self.context.device)
            return {**state_arrays(model), "history": history, "train_recall": recall}

        art = self.cached("detector", compute, inputs=inputs)
        self._detector_arrays = art  # the model is built only when a region is detected
        self._detector_id = art.id
        if checkpoint is not None and checkpoint.is_file():
            checkpoint.unlink()
        history, recall = art.get("history", []), art.get("train_recall", {})
        problems = convergence_problems(history, recall)
        if problems and art.id not in _WARNED:  # once per detector and process (sweeps)
            _WARNED.add(art.id)
            for problem in problems:
                log.warning("drcnn: the detector did not converge: %s. Train longer or with "
                            "a higher learning rate (detector_iterations, "
                            "detector_learning_rate)", problem)
        first, last = loss_ends(history)
        self._info.update({
            "detector_backbone": cfg.backbone, "detector_train_images": len(boxed),
            "detector_classes": max(1, len(self._classes)), "detector_history": history,
            "detector_loss_first": first, "detector_loss_last": last,
            "detector_train_recall": recall, "detector_converged": not problems,
            "detector_convergence_problems": problems,
            **describe_detector(build_detector(cfg, max(1, len(self._classes)),
                                               pretrained=False),
                                cfg.backbone, cfg.frozen_stages)})

    def detector(self):
        if self._detector is None:
            self._detector = model_from_arrays(self.config, max(1, len(self._classes)),
                                               self._detector_arrays, self.context.device)
        return self._detector

    # -- regions and their features -------------------------------------------------------

    def feature_net(self) -> BackboneNet:
        if self._features_net is None:
            cfg = self.config
            name = cfg.feature_backbone or cfg.backbone
            net = load_backbone("resnet50" if name == FPN else name, cfg.feature_weights)
            self._features_net = prepare(net, self.context.device, channels_last=True)
        return self._features_net

    def _describe_regions(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        cfg = self.config
        resize = Resize("square", cfg.image_size)
        crops = [resize(crop(image, tuple(b))) for b in boxes]
        x = torch.from_numpy(np.stack(crops).transpose(0, 3, 1, 2).copy()).float()
        dev = torch.device(self.context.device)
        x = x.to(dev).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(dev, cfg.precision):
            f = self.feature_net().penultimate(x, after_relu=cfg.fc7_after_relu)
        return l2_normalize(f.float().cpu().numpy())

    def _regions_of(self, items: Sequence[Image | Query], role: str) -> list[dict[str, Any]]:
        """The regions of every item; unreadable images are all reported at the end."""
        out, unreadable = [], []
        for im in items:
            try:
                out.append(self._regions_of_one(im, role))
            except ImageReadError as exc:
                unreadable.append(exc)
        if unreadable:
            raise BadImagesError.combine(unreadable)
        return out

    def _regions_of_one(self, im: Image | Query, role: str) -> dict[str, Any]:
        cfg = self.config
        box = im.crop_box if isinstance(im, Query) else None
        image = read_image(im.path, box)
        h, w = image.shape[:2]
        if role == "queries" and cfg.query_regions == "box" and isinstance(im, Query) \
                and im.box is not None:
            full = read_image(im.path)
            image = full
            boxes = np.repeat(np.asarray([im.box], np.float32), cfg.max_regions, axis=0)
            scores = np.ones(cfg.max_regions, np.float32)
            found = 1
        else:
            det = detect(self.detector(), image, cfg.max_regions, self.context.device)
            found = len(det["boxes"])
            boxes, scores = pad_regions(det["boxes"], det["scores"], cfg.max_regions,
                                        cfg.padding, w, h)
        feats = self._describe_regions(image, boxes)
        item = {"features": feats[None], "boxes": boxes[None], "scores": scores[None],
                "found": np.asarray([found], np.int64)}
        if cfg.class_scores:  # of the first box: the best detection, or the given box
            item["class_scores"] = class_scores_of(self.detector(), image, boxes[:1],
                                                   self.context.device)
        return item

    def regions(self, role: str, images: Sequence[Image | Query]) -> dict[str, np.ndarray]:
        """Per image: `max_regions` boxes, scores and L2-normalized region features
        (cached in shards; independent of `regions` and `fusion`)."""
        if self._detector_arrays is None:
            raise RuntimeError("drcnn: fit() trains the detector; call it before index()")
        stage = "query_regions" if role == "queries" else "regions"
        parts = []
        for segment, start, stop in split_segments(images):
            part = tuple(images[start:stop])
            parts.append(self.cached_map(
                stage, part, lambda chunk, role=role: self._regions_of(chunk, role),
                inputs={"detector": self._detector_id, "images": self.context.identify(part)},
                shard_size=256, description=f"drcnn: detect + describe regions ({role})"
                + ("" if segment is None else f" ({segment.name})")))
        names = [k for k in parts[0] if k != "offsets"]
        return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in names}

    def fuse(self, regions: dict[str, np.ndarray]) -> np.ndarray:
        cfg = self.config
        return fuse(regions["features"], cfg.regions, cfg.fusion,
                    regions.get("class_scores") if cfg.class_scores else None,
                    cfg.class_score_weight)

    # -- index / query ------------------------------------------------------------------

    def index(self, database: Sequence[Image]) -> None:
        reg = self.regions("database", database)
        self._database = self.fuse(reg)
        self._info["detection_recall_iou50"] = detection_recall(database, reg["boxes"])
        self._info["images_without_detection"] = int((reg["found"] == 0).sum())
        self._info["feature_dim"] = int(self._database.shape[1])
        self._info["database_best_box_iou"] = best_box_iou(
            [im.box for im in database], reg["boxes"])

    def query(self, queries: Sequence[Query], k: int) -> tuple[np.ndarray, np.ndarray]:
        reg = self.regions("queries", queries)
        if self.config.query_regions == "detect":  # regions found inside the crop
            self._info["query_best_box_iou"] = best_box_iou(
                [_in_crop(q) for q in queries], reg["boxes"])
        return search(self._database, self.fuse(reg), k, backend=self.context.search)

    def index_bytes(self) -> int | None:
        db = getattr(self, "_database", None)
        return None if db is None else int(db.nbytes)


def fuse(features: np.ndarray, k: int, fusion: str, class_scores: np.ndarray | None = None,
         class_score_weight: float = 1.0) -> np.ndarray:
    """Fuse the first `k` (L2-normalized) region features of each image (n, R, D):
    concat -> (n, k*D), mean / max -> (n, D); L2-normalized (Sec. 3.2). With
    `class_scores` (n, C), their L2-normalized vector times `class_score_weight` is
    appended before the final normalization."""
    f = np.asarray(features, np.float32)[:, :k]
    if fusion == "concat":
        out = f.reshape(len(f), -1)
    elif fusion == "mean":
        out = f.mean(axis=1)
    elif fusion == "max":
        out = f.max(axis=1)
    else:
        raise ConfigError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
    out = l2_normalize(out)
    if class_scores is not None:
        out = np.concatenate([out, class_score_weight * l2_normalize(
            np.asarray(class_scores, np.float32).reshape(len(out), -1))], axis=1)
        out = l2_normalize(out)
    return np.ascontiguousarray(out, np.float32)


def _in_crop(q: Query) -> tuple[float, float, float, float] | None:
    """The query's object box in the coordinates of the image the detector saw (the crop,
    rounded outwards as `images.crop` does, when the protocol crops)."""
    if q.box is None:
        return None
    if not q.crop:
        return q.box
    x1, y1, x2, y2 = q.box
    ox, oy = max(0, int(np.floor(x1))), max(0, int(np.floor(y1)))
    return (x1 - ox, y1 - oy, x2 - ox, y2 - oy)


def best_box_iou(objects: Sequence[Box | None], boxes: np.ndarray) -> list[float | None]:
    """Per image, the IoU of its best (first) region with its object's box (None without
    one): the evidence of whether the region a K=1 feature describes holds the object."""
    return [None if b is None else round(float(iou(b, boxes[i, :1])[0]), 4)
            for i, b in enumerate(objects)]


def detection_recall(images: Sequence[Image], boxes: np.ndarray,
                     threshold: float = 0.5) -> dict[str, Any]:
    """Share of images with a ground-truth box whose box is matched (IoU >= threshold) by
    one of the top-K detections, for K = 1..max_regions."""
    with_box = [(i, im.box) for i, im in enumerate(images) if im.box is not None]
    if not with_box:
        return {"images": 0}
    kmax = boxes.shape[1]
    hits = np.zeros(kmax)
    for i, box in with_box:
        ious = iou(box, boxes[i])
        first = np.flatnonzero(ious >= threshold)
        if first.size:
            hits[first[0]:] += 1
    return {"images": len(with_box),
            **{str(k): round(float(hits[k - 1] / len(with_box)), 4) for k in range(1, kmax + 1)}}
