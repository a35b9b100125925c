"""The deep region CNN's detector: torchvision's Faster R-CNN (Ren et al., NeurIPS 2015)
on a registered backbone, fine-tuned on a dataset's train boxes as the seed paper does
(Mei et al. 2018, Sec. 3.1.1).

What the paper fixes, and where it is set:
  - the first two convolution layers frozen, all later layers trained: the backbone's
    first stage is frozen (`frozen_stages=1`: VGG16's conv1_1 and conv1_2);
  - RPN anchors positive at IoU > 0.7 with a ground-truth box or when they are a box's
    best match, negative at IoU < 0.3: torchvision's defaults (`rpn_fg_iou_thresh=0.7`,
    `rpn_bg_iou_thresh=0.3`, low-quality matches allowed), passed explicitly;
  - the loss of Eq. 1, log-loss over object / not object plus smooth-L1 box regression:
    torchvision's RPN and box-head losses, summed with weight 1 (torchvision normalizes
    the box term by the sampled anchors, the role of the paper's λ / N_reg).
Left open by the paper, with the defaults chosen: the heads are class-agnostic
("object" vs background) unless `class_scores` asks for N classes; anchors of sizes
32..512 and ratios 0.5, 1, 2 on the backbone's last map (py-faster-rcnn's); SGD with
momentum 0.9, weight decay 5e-4, learning rate 1e-3 (py-faster-rcnn's), horizontal flips;
test-time NMS 0.3 (py-faster-rcnn's). Proposal and sampling sizes are fields, so a CPU
run can use fewer (see the README) while the paper's settings stay the default.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from irbench.datasets.base import Box, Image
from irbench.datasets.images import read_image
from irbench.harness.progress import NULL_PROGRESS, Progress
from irbench.methods.cnn.backbones import BackboneNet, build_backbone, load_backbone

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectorSettings:
    """Everything the trained detector depends on (its cache key)."""

    backbone: str = "vgg16"
    weights: str = "imagenet"
    classes: int = 1
    """Object classes (1: class-agnostic)."""
    min_size: int = 600
    max_size: int = 1000
    rpn_pre_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_test: int = 300
    rpn_batch_size_per_image: int = 256
    box_batch_size_per_image: int = 512
    box_nms_thresh: float = 0.3
    epochs: int = 10
    learning_rate: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    frozen_stages: int = 1
    flip: bool = True


class _ConvBody(nn.Module):
    """The backbone's last convolutional map as Faster R-CNN's feature extractor."""

    def __init__(self, net: BackboneNet) -> None:
        super().__init__()
        self.body = net
        self.out_channels = net.spec.conv_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the detector's transform already normalized x; undo the wrapper's normalization
        return _conv_only(self.body, x)


def _conv_only(net: BackboneNet, x: torch.Tensor) -> torch.Tensor:
    from irbench.methods.cnn.backbones import _ADAPTERS

    return _ADAPTERS[type(net.net).__name__].conv(net.net, x)


FPN = "resnet50-fpn"
"""The one detector backbone that is not a registered feature backbone: ResNet-50 with a
feature pyramid (Lin et al. 2017), torchvision's, on `resnet50`'s ImageNet weights."""


def build_detector(s: DetectorSettings, *, pretrained: bool = True) -> nn.Module:
    """Faster R-CNN on `s.backbone` (ImageNet weights when `pretrained`): the backbone's
    last convolutional map, or for `resnet50-fpn` a feature pyramid."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.rpn import AnchorGenerator
    from torchvision.ops import MultiScaleRoIAlign

    name = "resnet50" if s.backbone == FPN else s.backbone
    net = load_backbone(name, s.weights) if pretrained else build_backbone(name)
    spec = net.spec
    if s.backbone == FPN:
        from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor

        body = _resnet_fpn_extractor(net.net, trainable_layers=5 - s.frozen_stages)
        anchors = AnchorGenerator(sizes=((32,), (64,), (128,), (256,), (512,)),
                                  aspect_ratios=((0.5, 1.0, 2.0),) * 5)
        pool = MultiScaleRoIAlign(featmap_names=["0", "1", "2", "3"], output_size=7,
                                  sampling_ratio=2)
    else:
        body = _ConvBody(net)
        anchors = AnchorGenerator(sizes=((32, 64, 128, 256, 512),),
                                  aspect_ratios=((0.5, 1.0, 2.0),))
        pool = MultiScaleRoIAlign(featmap_names=["0"], output_size=7, sampling_ratio=2)
    model = FasterRCNN(
        body, num_classes=s.classes + 1, min_size=s.min_size, max_size=s.max_size,
        image_mean=[m / 255 for m in spec.mean], image_std=[v / 255 for v in spec.std],
        rpn_anchor_generator=anchors, box_roi_pool=pool,
        rpn_pre_nms_top_n_train=s.rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=s.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=s.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=s.rpn_post_nms_top_n_test,
        rpn_fg_iou_thresh=0.7, rpn_bg_iou_thresh=0.3,
        rpn_batch_size_per_image=s.rpn_batch_size_per_image,
        box_batch_size_per_image=s.box_batch_size_per_image,
        box_nms_thresh=s.box_nms_thresh, box_score_thresh=0.0, box_detections_per_img=100)
    if s.backbone != FPN:  # the FPN extractor froze its own leading layers
        for stage in net.stages()[:s.frozen_stages]:
            for p in stage.parameters():
                p.requires_grad_(False)
    return model


def frozen_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in model.named_parameters() if not p.requires_grad}


def _image_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float() / 255.0


def train_detector(s: DetectorSettings, train: Sequence[Image], class_of: dict[str, int], *,
                   seed: int, device: str = "cpu", checkpoint: Path | None = None,
                   progress: Progress = NULL_PROGRESS, stop_after_epoch: int | None = None,
                   max_steps: int | None = None) -> tuple[nn.Module, list[dict[str, float]]]:
    """Fine-tune the detector on the train images' boxes, one image per step. A
    checkpoint is written after every epoch and resumed from. Returns (model, history of
    mean losses per epoch)."""
    from irbench.methods.cnn.fcnn import resume, save_checkpoint

    torch.manual_seed(seed)
    model = build_detector(s).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=s.learning_rate, momentum=s.momentum,
                                weight_decay=s.weight_decay)
    history, start = resume(checkpoint, model, optimizer, device=device)
    boxed = [im for im in train if im.box is not None]
    steps = 0
    with progress.task(f"fine-tune Faster R-CNN ({s.backbone})",
                       total=s.epochs * len(boxed)) as advance:
        advance(start * len(boxed))
        for epoch in range(start, s.epochs):
            model.train()
            order = np.random.default_rng([seed, epoch]).permutation(len(boxed))
            sums: dict[str, float] = {}
            for n, i in enumerate(order, 1):
                im = boxed[int(i)]
                img = read_image(im.path)
                x1, y1, x2, y2 = im.box
                w = img.shape[1]
                if s.flip and np.random.default_rng([seed, epoch, int(i)]).random() < 0.5:
                    img = img[:, ::-1]
                    x1, x2 = w - x2, w - x1
                target = {"boxes": torch.tensor([[x1, y1, x2, y2]], dtype=torch.float32,
                                                device=device),
                          "labels": torch.tensor([class_of.get(im.label or "", 1)],
                                                 dtype=torch.int64, device=device)}
                losses = model([_image_tensor(img).to(device)], [target])
                loss = sum(losses.values())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                advance(1, status=f"epoch {epoch + 1}/{s.epochs} " + " ".join(
                    f"{k.removeprefix('loss_')} {v / n:.3f}" for k, v in sums.items()))
                steps += 1
                if max_steps is not None and steps >= max_steps:
                    break
            history.append({"epoch": epoch + 1, **{k: v / max(1, n) for k, v in sums.items()}})
            log.info("detector epoch %d/%d: %s", epoch + 1, s.epochs,
                     ", ".join(f"{k} {v:.4f}" for k, v in history[-1].items() if k != "epoch"))
            if checkpoint is not None:
                save_checkpoint(checkpoint, model, optimizer, history, epoch + 1)
            if (stop_after_epoch is not None and epoch + 1 >= stop_after_epoch) or \
                    (max_steps is not None and steps >= max_steps):
                break
    return model.eval(), history


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


def model_from_arrays(s: DetectorSettings, arrays: dict[str, Any], device: str) -> nn.Module:
    model = build_detector(s, pretrained=False)
    model.load_state_dict({k[2:]: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()
                           if k.startswith("w/")})
    return model.to(device).eval()
