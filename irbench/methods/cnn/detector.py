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
("object" vs background) unless `class_scores` asks for N classes; SGD with momentum
0.9, weight decay 5e-4, learning rate 1e-3 (py-faster-rcnn's), horizontal flips;
test-time NMS 0.3 (py-faster-rcnn's). Proposal and sampling sizes are fields, so a CPU
run can use fewer (see the README).

The box head. VGG16 gets py-faster-rcnn's VGG16 end-to-end head: `roi_pool5` (7 x 7 max
pooling at 1/16, `RoIPool`) feeding VGG16's own ImageNet fc6 and fc7 (4,096-D, ReLU,
dropout 0.5; `vgg16_box_head`), then `cls_score` (std 0.01) and `bbox_pred` (std 0.001)
(train.prototxt of models/pascal_voc/VGG16/faster_rcnn_end2end; the weights come from
VGG16.v2.caffemodel, copied by layer name). Other backbones have no pretrained fully
connected layers to start a head from and get torchvision's `TwoMLPHead` (2 x 1,024-D,
random) on 7 x 7 RoIAlign (`BOX_HEADS`). The record states the head, its layer shapes and
the parameters per part (`describe_detector`).

py-faster-rcnn's values (rbgirshick/py-faster-rcnn, lib/fast_rcnn/config.py at 54d2576,
experiments/cfgs/faster_rcnn_end2end.yml, the VGG16 end2end solver.prototxt,
lib/rpn/generate_anchors.py) against the defaults here, which do NOT all follow it yet:

    constant                     py-faster-rcnn                   here (default)
    anchors                      9: 128, 256, 512 px x 0.5/1/2    15: 32..512 px x 0.5/1/2
    RoIs per image (BATCH_SIZE)  128, FG_FRACTION 0.25            512, 0.25
    RPN pre/post NMS, train      12,000 / 2,000 (NMS 0.7)         2,000 / 2,000
    RPN pre/post NMS, test       6,000 / 300                      1,000 / 300
    RPN batch, fg fraction       256, 0.5; IoU 0.7 / 0.3          the same
    FG_THRESH, BG_THRESH_HI/LO   0.5, 0.5 / 0.1 (0.0 in later     torchvision: 0.5 / 0.5,
                                 end2end ymls)                    lower bound 0
    image scale                  shorter side 600, longer <= 1000 the same
    learning rate                0.001, step x0.1 at 50,000 of    0.001 constant, epochs
                                 70,000 iterations (VOC07)
    momentum, weight decay       0.9, 0.0005                      the same
    frozen layers                conv1_x and conv2_x (lr_mult 0)  the paper's "initial two
                                                                  convolution layers":
                                                                  conv1_1, conv1_2
    test NMS                     0.3                              the same
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


def describe_detector(arrays: dict[str, Any], backbone: str, frozen_stages: int
                      ) -> dict[str, Any]:
    """For the run record, from a trained detector's arrays: the box head, the shapes of
    its fully connected layers and of the predictor, and the parameters per part
    (backbone, rpn, box head, box predictor; the backbone's first `frozen_stages` stages
    are frozen)."""
    parts = {"backbone": "w/backbone.", "rpn": "w/rpn.", "box_head": "w/roi_heads.box_head.",
             "box_predictor": "w/roi_heads.box_predictor."}
    counts = {name: int(sum(np.asarray(v).size for k, v in arrays.items()
                            if k.startswith(prefix) and not k.endswith(("running_mean",
                                                                        "running_var",
                                                                        "num_batches_tracked"))))
              for name, prefix in parts.items()}
    layers = [f"{k.removeprefix('w/roi_heads.').removesuffix('.weight')}: "
              f"{np.asarray(v).shape[1]}->{np.asarray(v).shape[0]}"
              for k, v in arrays.items()
              if k.startswith("w/roi_heads.") and k.endswith(".weight")
              and np.asarray(v).ndim == 2]
    return {"detector_box_head": head_of(backbone), "detector_box_layers": layers,
            "detector_parameters": counts, "detector_frozen_stages": frozen_stages}


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
    head = None
    if s.backbone == "vgg16":
        head = vgg16_box_head(net)
        net.net.classifier = nn.Identity()  # fc6/fc7 now live in the head; fc8 is unused
    model = FasterRCNN(
        body, num_classes=s.classes + 1 if head is None else None, min_size=s.min_size, max_size=s.max_size,
        image_mean=[m / 255 for m in spec.mean], image_std=[v / 255 for v in spec.std],
        rpn_anchor_generator=anchors, box_roi_pool=pool, box_head=head,
        box_predictor=None if head is None else _predictor(head.out_channels, s.classes + 1),
        rpn_pre_nms_top_n_train=s.rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=s.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=s.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=s.rpn_post_nms_top_n_test,
        rpn_fg_iou_thresh=0.7, rpn_bg_iou_thresh=0.3,
        rpn_batch_size_per_image=s.rpn_batch_size_per_image,
        box_batch_size_per_image=s.box_batch_size_per_image,
        box_nms_thresh=s.box_nms_thresh, box_score_thresh=0.0, box_detections_per_img=100)
    if head is not None:  # torchvision accepts only its RoIAlign here: swap it after
        model.roi_heads.box_roi_pool = RoIPool(7)
    if s.backbone != FPN:  # the FPN extractor froze its own leading layers
        for stage in net.stages()[:s.frozen_stages]:
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
