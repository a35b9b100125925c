"""The deep region CNN's detector: torchvision's Faster R-CNN (Ren et al., NeurIPS 2015)
on a registered backbone, fine-tuned on a dataset's train boxes as the seed paper does
(Mei et al. 2018, Sec. 3.1.1) with py-faster-rcnn's VGG16 end-to-end recipe, which the
paper used and whose constants it does not restate.

What the paper fixes, and where it is set:
  - "the initial two convolution layers have the unchanged weights, and the weights of
    all subsequent layers are updated": `frozen_stages=1` freezes the backbone's first
    stage (VGG16: conv1_1 and conv1_2). py-faster-rcnn's VGG16 prototxt freezes conv1_x
    and conv2_x (four layers, `lr_mult: 0`); the paper's text wins;
  - RPN anchors positive at IoU > 0.7 with a ground-truth box or when they are a box's
    best match, negative at IoU < 0.3 (also py-faster-rcnn's RPN_POSITIVE_OVERLAP /
    RPN_NEGATIVE_OVERLAP), passed explicitly;
  - the loss of Eq. 1, log-loss over object / not object plus smooth-L1 box regression:
    torchvision's RPN and box-head losses, summed with weight 1 (torchvision normalizes
    the box term by the sampled anchors, the role of the paper's lambda / N_reg).

py-faster-rcnn's values, read in rbgirshick/py-faster-rcnn (lib/fast_rcnn/config.py at
54d2576; experiments/cfgs/faster_rcnn_end2end.yml; models/pascal_voc/VGG16/
faster_rcnn_end2end/solver.prototxt and train.prototxt; experiments/scripts/
faster_rcnn_end2end.sh at d66cc2b; lib/rpn/generate_anchors.py), and the defaults here:

    constant                       py-faster-rcnn (file)                 default here
    anchors                        9: 128, 256, 512 px x ratios 0.5,     `anchor_sizes`
                                   1, 2 (generate_anchors.py: base 16,   (128, 256, 512),
                                   scales 8, 16, 32)                     ratios 0.5, 1, 2
    image scale                    SCALES 600, MAX_SIZE 1000 (config)    `min_size` 600,
                                                                         `max_size` 1000
    RPN pre/post NMS, training     12,000 / 2,000, NMS 0.7 (config)      12,000 / 2,000
    RPN pre/post NMS, test         6,000 / 300 (config)                  6,000 / 300
    RPN anchors sampled, fg share  RPN_BATCHSIZE 256, FG_FRACTION 0.5    256, 0.5
    RoIs sampled per image         BATCH_SIZE 128, FG_FRACTION 0.25      128, 0.25
    RoI fg / bg IoU                FG_THRESH 0.5; BG_THRESH_HI 0.5,      0.5; 0.5, lower
                                   BG_THRESH_LO 0.0 (end2end yml; 0.1    bound 0.0
                                   in config.py)                         (torchvision's)
    images per update              IMS_PER_BATCH 1 x iter_size 2         2 (gradients of
                                   (yml, solver)                         2 images summed,
                                                                         halved)
    learning rate, schedule        base_lr 0.001, "step", gamma 0.1,     0.001, x0.1 at
                                   stepsize 50,000 (solver)              50,000
    iterations                     70,000 (faster_rcnn_end2end.sh,       70,000
                                   pascal_voc)
    momentum, weight decay         0.9, 0.0005 (solver)                  the same
    horizontal flips               USE_FLIPPED: every image twice        the same (each
                                   (config)                              pass: every image
                                                                         and its mirror)
    roi_pool5, fc6/fc7             7x7 max pooling at 1/16; VGG16's      the same (VGG16)
                                   fc6/fc7, dropout 0.5 (train.prototxt)
    cls_score / bbox_pred init     gaussian std 0.01 / 0.001             the same
    test NMS                       0.3 (config TEST.NMS)                 0.3
    classes                        one per object class + background     one per label of
                                                                         the train boxes
                                                                         (`detector_classes`)

The schedule counts iterations like Caffe's solver: one iteration is one SGD update over
`detector_images_per_iteration` images (their gradients summed and divided by their
number, as `iter_size` does); the learning rate drops by 10 at `detector_lr_step`; there is
no early stop (the whole schedule always runs). py-faster-rcnn's 70,000 iterations were
set for PASCAL VOC 2007 (5,011 images, about 28 passes over the flipped set); the seed
paper gives no iteration count for its 55 (Oxford) or 15,000 (INSTRE-S) training boxes,
so py-faster-rcnn's is the default and a CPU run sets a shorter one (see the README).

Convergence, a documented rule, checked on every run that uses the detector: after
training, the detector runs on up to `CHECK_IMAGES` of its own train images (a seeded
sample) and the record keeps its recall of their boxes at IoU 0.5 among the top 1 and top
`CHECK_TOP` detections (`detector_train_recall`), with the mean total loss of the first
and the last tenth of the iterations (`detector_loss_first` / `detector_loss_last`). The
run warns that the detector did not converge when the top-`CHECK_TOP` train recall is
below `MIN_TRAIN_RECALL` or the last loss is above `MAX_LOSS_RATIO` times the first. The
record's `detector_history` is the loss curve: the mean of each loss over windows of
iterations (at most `HISTORY_POINTS` points) with the learning rate.

Class-agnostic detection (`detector_classes=agnostic`: "object" vs background) is an
option; by default the detector has one class per label of the train boxes (Oxford's
11 landmarks, INSTRE-S's 200 objects), which the class-score variant (Sec. 5) and F-CNN's
N-way fine-tuning (Sec. 4.2) imply. Detection then keeps, as py-faster-rcnn's test does,
a box per class above the background, each class NMS'd separately, and the best boxes
over all classes are the regions.

The box head. VGG16 gets py-faster-rcnn's VGG16 end-to-end head: `roi_pool5` (7 x 7 max
pooling at 1/16, `RoIPool`) feeding VGG16's own ImageNet fc6 and fc7 (4,096-D, ReLU,
dropout 0.5; `vgg16_box_head`), then `cls_score` (std 0.01) and `bbox_pred` (std 0.001)
(train.prototxt; the weights come from VGG16.v2.caffemodel, copied by layer name). Other
backbones have no pretrained fully connected layers to start a head from and get
torchvision's `TwoMLPHead` (2 x 1,024-D, random) on 7 x 7 RoIAlign (`BOX_HEADS`). The
record states the head, its layer shapes and the parameters per part
(`describe_detector`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from irbench.core.config import param
from irbench.core.progress import NULL_PROGRESS, Progress
from irbench.datasets.base import Box, Image
from irbench.datasets.images import read_image
from irbench.methods.cnn.backbones import BackboneNet, build_backbone, load_backbone

log = logging.getLogger(__name__)

MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
LR_GAMMA = 0.1
"""py-faster-rcnn's solver: momentum, weight decay and the step's factor."""
ANCHOR_RATIOS = (0.5, 1.0, 2.0)
"""py-faster-rcnn's anchor aspect ratios (generate_anchors.py)."""
RPN_BATCH_SIZE = 256
"""py-faster-rcnn's RPN_BATCHSIZE: anchors sampled per image for the RPN loss."""
CHECK_IMAGES = 100
CHECK_TOP = 5
MIN_TRAIN_RECALL = 0.5
MAX_LOSS_RATIO = 0.7
"""The convergence rule (module docstring)."""
HISTORY_POINTS = 50
CHECKPOINTS = 10
"""A training checkpoint is written this many times over the schedule (and resumed)."""

DETECTOR = "detector"
REGIONS = "regions"
"""The DR-CNN stages the detector's fields feed: training, or only detection."""


@dataclass(frozen=True)
class DetectorConfig:
    """The detector's fields of DR-CNN's config (`drcnn.DrcnnConfig` extends it); every
    default is py-faster-rcnn's or the paper's (module docstring)."""

    backbone: str = param("vgg16", "detector backbone (the paper: VGG16), any registered "
                                   "backbone or resnet50-fpn", stage=DETECTOR)
    weights: str = param("imagenet", "detector backbone weights: imagenet | none | PATH",
                         stage=DETECTOR)
    detector_classes: str = param(
        "per_label", "per_label: one class per train label (N classes); agnostic: object "
        "vs background", choices=("per_label", "agnostic"), stage=DETECTOR)
    min_size: int = param(600, "detector: shorter image side (py-faster-rcnn: 600)",
                          minimum=16, stage=DETECTOR)
    max_size: int = param(1000, "detector: longer image side cap (py-faster-rcnn: 1000)",
                          minimum=16, stage=DETECTOR)
    anchor_sizes: tuple[int, ...] = param(
        (128, 256, 512), "RPN anchor sizes in pixels, each at ratios 0.5, 1, 2 "
        "(py-faster-rcnn: 128, 256, 512)", minimum=1, stage=DETECTOR)
    rpn_pre_nms_top_n_train: int = param(12000, "detector training: RPN proposals before "
                                                "NMS (py-faster-rcnn: 12,000)",
                                         minimum=1, stage=DETECTOR)
    rpn_post_nms_top_n_train: int = param(2000, "detector training: proposals kept after "
                                                "NMS (py-faster-rcnn: 2,000)",
                                          minimum=1, stage=DETECTOR)
    box_batch_size_per_image: int = param(128, "detector training: RoIs sampled per image, "
                                               "a quarter foreground (py-faster-rcnn: 128)",
                                          minimum=1, stage=DETECTOR)
    detector_iterations: int = param(70000, "detector training: SGD iterations "
                                            "(py-faster-rcnn: 70,000)",
                                     minimum=0, stage=DETECTOR)
    detector_images_per_iteration: int = param(2, "detector training: images per SGD "
                                                  "update (py-faster-rcnn: iter_size 2)",
                                               minimum=1, stage=DETECTOR)
    detector_learning_rate: float = param(1e-3, "detector SGD learning rate "
                                                "(py-faster-rcnn: 0.001)",
                                          minimum=0.0, stage=DETECTOR)
    detector_lr_step: int = param(50000, "iteration at which the learning rate drops x0.1 "
                                         "(py-faster-rcnn: 50,000; 0: never)",
                                  minimum=0, stage=DETECTOR)
    frozen_stages: int = param(1, "backbone stages frozen (1: VGG16 conv1_1, conv1_2, as "
                                  "the paper)", minimum=0, stage=DETECTOR)
    rpn_pre_nms_top_n_test: int = param(6000, "detection: RPN proposals before NMS "
                                              "(py-faster-rcnn: 6,000)",
                                        minimum=1, stage=REGIONS)
    rpn_post_nms_top_n_test: int = param(300, "detection: proposals kept (py-faster-rcnn: "
                                              "300)", minimum=1, stage=REGIONS)
    box_nms_thresh: float = param(0.3, "detection NMS IoU (py-faster-rcnn test: 0.3)",
                                  minimum=0.0, maximum=1.0, stage=REGIONS)


class _ConvBody(nn.Module):
    """The backbone's last convolutional map as Faster R-CNN's feature extractor."""

    def __init__(self, net: BackboneNet) -> None:
        super().__init__()
        self.body = net
        self.out_channels = net.spec.conv_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the detector's transform already normalized x; undo the wrapper's normalization
        return self.body.conv_of_normalized(x)


class RoIPool(nn.Module):
    """py-faster-rcnn's `roi_pool5`: max pooling of each proposal to `output_size` ×
    `output_size` cells of the single feature map, at the map's stride (VGG16: 1/16, the
    prototxt's `spatial_scale: 0.0625`). The scale is inferred from the map and the
    padded image size, as torchvision's `MultiScaleRoIAlign` does."""

    def __init__(self, output_size: int = 7) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, features, proposals, image_shapes) -> torch.Tensor:
        from torchvision.ops import roi_pool

        x = features["0"] if isinstance(features, dict) else features
        height = max(int(h) for h, _ in image_shapes)
        scale = 2.0 ** round(float(np.log2(x.shape[-2] / height)))
        return roi_pool(x, proposals, self.output_size, spatial_scale=scale)


def vgg16_box_head(net: BackboneNet) -> nn.Sequential:
    """py-faster-rcnn's VGG16 head on `roi_pool5`: fc6 (25,088 → 4,096), ReLU, dropout
    0.5, fc7 (4,096 → 4,096), ReLU, dropout 0.5 — VGG16's own ImageNet layers (copied
    from `net`'s classifier, as Caffe's `copy_from` fills them by layer name), whose
    input is exactly the 7 × 7 × 512 RoI pool."""
    import copy

    head = nn.Sequential(nn.Flatten(), *copy.deepcopy(net.net.classifier[:6]))
    head.out_channels = 4096
    return head


BOX_HEADS = {
    "vgg16": "py-faster-rcnn's: ImageNet fc6/fc7 (4,096-D) on 7x7 RoI max pooling at 1/16",
}
"""The box head per detector backbone; any other gets torchvision's `TwoMLPHead`
(two randomly initialized 1,024-D layers on 7x7 RoIAlign): ResNet and EfficientNet have
no pretrained fully connected layers but their classifier to start it from."""
DEFAULT_BOX_HEAD = "torchvision's TwoMLPHead: 2 x 1,024-D, random init, on 7x7 RoIAlign"


def head_of(backbone: str) -> str:
    """What box head a detector on `backbone` gets (part of the detector's cache key)."""
    return BOX_HEADS.get(backbone, DEFAULT_BOX_HEAD)


DETECTOR_PARTS = {"backbone": "backbone.", "rpn": "rpn.", "box_head": "roi_heads.box_head.",
                  "box_predictor": "roi_heads.box_predictor."}


def parameter_counts(model: nn.Module, *, trainable: bool = False) -> dict[str, int]:
    """The detector's parameters per part; with `trainable`, only those fine-tuning
    updates (the frozen stages' left out)."""
    return {name: int(sum(p.numel() for k, p in model.named_parameters()
                          if k.startswith(prefix) and (p.requires_grad or not trainable)))
            for name, prefix in DETECTOR_PARTS.items()}


def describe_detector(model: nn.Module, backbone: str, frozen_stages: int) -> dict[str, Any]:
    """For the run record: the box head, the shapes of its fully connected layers and of
    the predictor, and the parameters per part (backbone, rpn, box head, box predictor),
    all and trainable (the backbone's first `frozen_stages` stages are frozen)."""
    layers = [f"{k.removeprefix('roi_heads.').removesuffix('.weight')}: "
              f"{p.shape[1]}->{p.shape[0]}" for k, p in model.named_parameters()
              if k.startswith("roi_heads.") and k.endswith(".weight") and p.ndim == 2]
    return {"detector_box_head": head_of(backbone), "detector_box_layers": layers,
            "detector_parameters": parameter_counts(model),
            "detector_trainable_parameters": parameter_counts(model, trainable=True),
            "detector_frozen_stages": frozen_stages}


FPN = "resnet50-fpn"
"""The one detector backbone that is not a registered feature backbone: ResNet-50 with a
feature pyramid (Lin et al. 2017), torchvision's, on `resnet50`'s ImageNet weights."""


def build_detector(cfg: DetectorConfig, classes: int, *, pretrained: bool = True
                   ) -> nn.Module:
    """Faster R-CNN on `cfg.backbone` (ImageNet weights when `pretrained`) for `classes`
    object classes plus background: the backbone's last convolutional map, or for
    `resnet50-fpn` a feature pyramid (its anchors: one size per level, 32..512)."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.rpn import AnchorGenerator
    from torchvision.ops import MultiScaleRoIAlign

    name = "resnet50" if cfg.backbone == FPN else cfg.backbone
    net = load_backbone(name, cfg.weights) if pretrained else build_backbone(name)
    spec = net.spec
    if cfg.backbone == FPN:
        from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor

        body = _resnet_fpn_extractor(net.net, trainable_layers=5 - cfg.frozen_stages)
        anchors = AnchorGenerator(sizes=((32,), (64,), (128,), (256,), (512,)),
                                  aspect_ratios=(ANCHOR_RATIOS,) * 5)
        pool = MultiScaleRoIAlign(featmap_names=["0", "1", "2", "3"], output_size=7,
                                  sampling_ratio=2)
    else:
        body = _ConvBody(net)
        anchors = AnchorGenerator(sizes=(tuple(cfg.anchor_sizes),),
                                  aspect_ratios=(ANCHOR_RATIOS,))
        pool = MultiScaleRoIAlign(featmap_names=["0"], output_size=7, sampling_ratio=2)
    head = None
    if cfg.backbone == "vgg16":
        head = vgg16_box_head(net)
        net.net.classifier = nn.Identity()  # fc6/fc7 now live in the head; fc8 is unused
    model = FasterRCNN(
        body, num_classes=classes + 1 if head is None else None,
        min_size=cfg.min_size, max_size=cfg.max_size,
        image_mean=[m / 255 for m in spec.mean], image_std=[v / 255 for v in spec.std],
        rpn_anchor_generator=anchors, box_roi_pool=pool, box_head=head,
        box_predictor=None if head is None else _predictor(head.out_channels, classes + 1),
        rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=cfg.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n_test,
        rpn_nms_thresh=0.7, rpn_fg_iou_thresh=0.7, rpn_bg_iou_thresh=0.3,
        rpn_batch_size_per_image=RPN_BATCH_SIZE, rpn_positive_fraction=0.5,
        box_fg_iou_thresh=0.5, box_bg_iou_thresh=0.5,
        box_batch_size_per_image=cfg.box_batch_size_per_image, box_positive_fraction=0.25,
        box_nms_thresh=cfg.box_nms_thresh, box_score_thresh=0.0, box_detections_per_img=100)
    if head is not None:  # torchvision accepts only its RoIAlign here: swap it after
        model.roi_heads.box_roi_pool = RoIPool(7)
    if cfg.backbone != FPN:  # the FPN extractor froze its own leading layers
        for stage in net.stages()[:cfg.frozen_stages]:
            for p in stage.parameters():
                p.requires_grad_(False)
    return model


def _predictor(channels: int, classes: int) -> nn.Module:
    """py-faster-rcnn's `cls_score` (std 0.01) and `bbox_pred` (std 0.001) on fc7."""
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

    pred = FastRCNNPredictor(channels, classes)
    nn.init.normal_(pred.cls_score.weight, std=0.01)
    nn.init.normal_(pred.bbox_pred.weight, std=0.001)
    nn.init.zeros_(pred.cls_score.bias)
    nn.init.zeros_(pred.bbox_pred.bias)
    return pred


def frozen_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in model.named_parameters() if not p.requires_grad}


def _image_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float() / 255.0


def learning_rate(cfg: DetectorConfig, iteration: int) -> float:
    """The step schedule: `detector_learning_rate`, times 0.1 from `detector_lr_step` on."""
    step = cfg.detector_lr_step
    return cfg.detector_learning_rate * (LR_GAMMA if step and iteration >= step else 1.0)


def history_window(iterations: int) -> int:
    """Iterations per point of the loss curve (at most `HISTORY_POINTS` points)."""
    return max(1, math.ceil(iterations / HISTORY_POINTS))


def train_detector(cfg: DetectorConfig, train: Sequence[Image], class_of: dict[str, int],
                   *, seed: int, device: str = "cpu", checkpoint: Path | None = None,
                   progress: Progress = NULL_PROGRESS, stop_after: int | None = None
                   ) -> tuple[nn.Module, list[dict[str, float]]]:
    """Fine-tune the detector on the train images' boxes for `detector_iterations` SGD
    iterations of `detector_images_per_iteration` images each, on the step schedule.

    The images come in passes over every boxed image and its mirror (py-faster-rcnn's
    flipped roidb), each pass in a seeded order; `class_of` maps a label to its class
    (1..N; a label it lacks, or every label when it is empty, is class 1). A checkpoint is
    written `CHECKPOINTS` times over the schedule and resumed from; `stop_after` (for
    tests) stops after that many iterations, as an interruption would. Returns (model,
    loss curve: per window of iterations, the mean of each loss, their total and the
    learning rate)."""
    from irbench.methods.cnn.checkpoint import resume, save_checkpoint

    torch.manual_seed(seed)
    model = build_detector(cfg, max([1, *class_of.values()])).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.detector_learning_rate, momentum=MOMENTUM,
                                weight_decay=WEIGHT_DECAY)
    history, start = resume(checkpoint, model, optimizer, device=device)
    boxed = [im for im in train if im.box is not None]
    samples = [(i, flip) for i in range(len(boxed)) for flip in (False, True)]
    per = cfg.detector_images_per_iteration
    total = cfg.detector_iterations
    window = history_window(total)
    every = window * math.ceil(math.ceil(total / CHECKPOINTS) / window)
    orders: dict[int, np.ndarray] = {}

    def sample(position: int) -> tuple[int, bool]:
        rnd, at = divmod(position, len(samples))
        if rnd not in orders:
            orders.clear()
            orders[rnd] = np.random.default_rng([seed, rnd]).permutation(len(samples))
        return samples[int(orders[rnd][at])]

    sums: dict[str, float] = {}
    seen = 0
    status = ""
    model.train()
    with progress.task(f"fine-tune Faster R-CNN ({cfg.backbone})", total=total) as advance:
        advance(start)
        for it in range(start, total):
            lr = learning_rate(cfg, it)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            for j in range(per):
                losses = model(*_training_input(boxed, *sample(it * per + j), class_of,
                                                device))
                (sum(losses.values()) / per).backward()
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                seen += 1
            optimizer.step()
            done = it + 1
            if done % window == 0 or done == total:
                point = {k: v / seen for k, v in sums.items()}
                history.append({"iteration": done, "lr": lr, **point,
                                "loss": sum(point.values())})
                sums, seen = {}, 0
                log.debug("detector iteration %d/%d: %s", done, total, ", ".join(
                    f"{k} {v:.4f}" for k, v in history[-1].items() if k != "iteration"))
                status = f"lr {lr:g} loss {history[-1]['loss']:.3f}"
            advance(1, status=status)
            if checkpoint is not None and (done % every == 0 or done == total):
                save_checkpoint(checkpoint, model, optimizer, history, done)
            if stop_after is not None and done >= stop_after:
                break
    return model.eval(), history


def _training_input(boxed: Sequence[Image], index: int, flip: bool,
                    class_of: dict[str, int], device: str
                    ) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    im = boxed[index]
    img = read_image(im.path)
    x1, y1, x2, y2 = im.box
    if flip:
        w = img.shape[1]
        img = img[:, ::-1]
        x1, x2 = w - x2, w - x1
    target = {"boxes": torch.tensor([[x1, y1, x2, y2]], dtype=torch.float32, device=device),
              "labels": torch.tensor([class_of.get(im.label or "", 1)], dtype=torch.int64,
                                     device=device)}
    return [_image_tensor(img).to(device)], [target]


def train_check(model: nn.Module, train: Sequence[Image], *, seed: int, device: str = "cpu"
                ) -> dict[str, Any]:
    """The detector's recall of its own train boxes (IoU >= 0.5) among its top 1 and top
    `CHECK_TOP` detections, on up to `CHECK_IMAGES` boxed train images (a seeded sample)."""
    boxed = [im for im in train if im.box is not None]
    if len(boxed) > CHECK_IMAGES:
        pick = np.sort(np.random.default_rng([seed, 1]).choice(len(boxed), CHECK_IMAGES,
                                                               replace=False))
        boxed = [boxed[int(i)] for i in pick]
    hits = np.zeros(2)
    for im in boxed:
        found = detect(model, read_image(im.path), CHECK_TOP, device)["boxes"]
        ious = iou(im.box, found) if len(found) else np.zeros(0)
        hits += [bool(ious[:1].size and ious[0] >= 0.5), bool((ious >= 0.5).any())]
    n = max(1, len(boxed))
    return {"images": len(boxed), "1": round(float(hits[0] / n), 4),
            str(CHECK_TOP): round(float(hits[1] / n), 4)}


def loss_ends(history: Sequence[dict[str, float]]) -> tuple[float | None, float | None]:
    """Mean total loss over the first and the last tenth of the loss curve's points."""
    losses = [h["loss"] for h in history if "loss" in h]
    if not losses:
        return None, None
    tenth = max(1, round(len(losses) / 10))
    return float(np.mean(losses[:tenth])), float(np.mean(losses[-tenth:]))


def convergence_problems(history: Sequence[dict[str, float]], recall: dict[str, Any]
                         ) -> list[str]:
    """Why the detector did not converge, by the module docstring's rule (empty: it
    did)."""
    problems = []
    top = recall.get(str(CHECK_TOP))
    if recall.get("images") and top is not None and top < MIN_TRAIN_RECALL:
        problems.append(f"it finds only {100 * top:.0f}% of its own {recall['images']} "
                        f"train boxes among its top {CHECK_TOP} detections (IoU >= 0.5; "
                        f"the rule asks >= {100 * MIN_TRAIN_RECALL:.0f}%)")
    first, last = loss_ends(history)
    if first is not None and last is not None and last > MAX_LOSS_RATIO * first:
        problems.append(f"its loss fell only from {first:.3f} to {last:.3f} (the rule asks "
                        f"<= {MAX_LOSS_RATIO:g} x the first)")
    return problems


@torch.inference_mode()
def detect(model: nn.Module, image: np.ndarray, max_regions: int, device: str = "cpu",
           with_class_scores: bool = False) -> dict[str, np.ndarray]:
    """Top `max_regions` boxes by score after NMS (x1 y1 x2 y2 in the image's pixels),
    their scores, and with `with_class_scores` the softmax class-score vector of each box
    (background dropped)."""
    model.eval()
    x = _image_tensor(image).to(device)
    out = model([x])[0]
    boxes = out["boxes"][:max_regions]
    result = {"boxes": boxes.cpu().numpy().astype(np.float32),
              "scores": out["scores"][:max_regions].cpu().numpy().astype(np.float32)}
    if with_class_scores:
        result["class_scores"] = _class_scores(model, x, boxes)
    return result


@torch.inference_mode()
def class_scores_of(model: nn.Module, image: np.ndarray, boxes: np.ndarray,
                    device: str = "cpu") -> np.ndarray:
    """The detector's softmax class scores (background dropped) of given boxes."""
    model.eval()
    x = _image_tensor(image).to(device)
    return _class_scores(model, x, torch.as_tensor(np.asarray(boxes, np.float32),
                                                   device=device).reshape(-1, 4))


def _class_scores(model: nn.Module, x: torch.Tensor, boxes: torch.Tensor) -> np.ndarray:
    images, _ = model.transform([x])
    scale_y = images.image_sizes[0][0] / x.shape[1]
    scale_x = images.image_sizes[0][1] / x.shape[2]
    scaled = boxes * torch.tensor([scale_x, scale_y, scale_x, scale_y], device=boxes.device)
    feats = model.backbone(images.tensors)
    if isinstance(feats, torch.Tensor):
        feats = {"0": feats}
    pooled = model.roi_heads.box_roi_pool(feats, [scaled], images.image_sizes)
    logits, _ = model.roi_heads.box_predictor(model.roi_heads.box_head(pooled))
    return logits.softmax(-1)[:, 1:].cpu().numpy().astype(np.float32)


def pad_regions(boxes: np.ndarray, scores: np.ndarray, k: int, rule: str,
                width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Exactly `k` boxes: when fewer were detected, `repeat_best` repeats the best box,
    `whole_image` adds the whole image (score 0); no detection at all gives the whole
    image under both rules."""
    whole = np.array([[0, 0, width, height]], np.float32)
    if len(boxes) == 0:
        boxes, scores = whole, np.zeros(1, np.float32)
    missing = k - len(boxes)
    if missing > 0:
        fill = boxes[:1] if rule == "repeat_best" else whole
        fill_score = scores[:1] if rule == "repeat_best" else np.zeros(1, np.float32)
        boxes = np.concatenate([boxes, np.repeat(fill, missing, axis=0)])
        scores = np.concatenate([scores, np.repeat(fill_score, missing)])
    return boxes[:k].astype(np.float32), scores[:k].astype(np.float32)


def iou(a: Box | np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box `a` with each row of `b` (x1 y1 x2 y2)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    iy = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return inter / np.maximum(union, 1e-9)


def state_arrays(model: nn.Module) -> dict[str, Any]:
    return {f"w/{k}": v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def model_from_arrays(cfg: DetectorConfig, classes: int, arrays: dict[str, Any],
                      device: str) -> nn.Module:
    model = build_detector(cfg, classes, pretrained=False)
    model.load_state_dict({k[2:]: torch.from_numpy(np.array(v)) for k, v in arrays.items()
                           if k.startswith("w/")})
    return model.to(device).eval()
