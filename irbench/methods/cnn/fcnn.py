"""`fcnn`: the seed paper's F-CNN baseline (Mei et al. 2018, Sec. 4.4): the ImageNet
backbone fine-tuned as an N-class classifier on the dataset's train split (Oxford: the
55 query crops in 11 landmark classes; INSTRE-S: 200 classes x 75 images; `demo`: its
train views), then described exactly as `cnn` does (FC7 by default).

The paper gives none of the training hyper-parameters; these are Config fields with
these defaults: SGD with momentum 0.9 and weight decay 5e-4, learning rate 1e-3 for the
backbone and 1e-2 for the new classifier layer, cosine decay to zero over all steps, 10
epochs, batches of 16, the train images cropped to their boxes, augmented by a random
resized crop (60-100% of the area, aspect 3/4-4/3) to `image_size` and a horizontal
flip; the first stage is frozen (VGG16: conv1_1 and conv1_2, the same layers the paper
freezes when it fine-tunes Faster R-CNN); batch-norm statistics stay frozen (small
batches). The new layer is initialized from the seed.

Training saves a checkpoint (weights, optimizer, schedule, RNG state) after every epoch
and resumes from it after an interruption; the trained weights are cached by a hash of
everything they depend on (backbone, weights, the hyper-parameters, the train split,
the seed), so later runs and every pooling on top reuse them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import torch
from torch import nn

from irbench.core.config import param
from irbench.core.progress import NULL_PROGRESS, Progress
from irbench.datasets.base import Image
from irbench.datasets.images import check_decodable, read_image
from irbench.errors import ConfigError
from irbench.methods.base import Stage
from irbench.methods.cnn.backbones import BackboneNet, build_backbone, load_backbone
from irbench.methods.cnn.checkpoint import checkpoint_path, resume, save_checkpoint
from irbench.methods.cnn.extract import prepare
from irbench.methods.cnn.global_cnn import CnnConfig, CnnMethod

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FcnnConfig(CnnConfig):
    epochs: int = param(10, "passes over the train split", minimum=0, stage="finetune")
    train_batch_size: int = param(16, "images per training step", minimum=1, stage="finetune")
    learning_rate: float = param(1e-3, "SGD learning rate of the pretrained layers", minimum=0.0, stage="finetune")
    head_learning_rate: float = param(1e-2, "SGD learning rate of the new classifier layer", minimum=0.0, stage="finetune")
    momentum: float = param(0.9, "SGD momentum", minimum=0.0, stage="finetune")
    weight_decay: float = param(5e-4, "SGD weight decay", minimum=0.0, stage="finetune")
    frozen_stages: int = param(1, "leading backbone stages left frozen (VGG16: 1 = "
                                   "conv1_1 and conv1_2)", minimum=0, stage="finetune")
    train_on_boxes: bool = param(True, "crop train images to their boxes when they have one", stage="finetune")
    min_crop_area: float = param(0.6, "augmentation: random resized crop keeps at least "
                                      "this share of the area (1 = no crop)", minimum=0.01, maximum=1.0, stage="finetune")
    flip: bool = param(True, "augmentation: random horizontal flip", stage="finetune")


class TrainImages(torch.utils.data.Dataset):
    """Train images (cropped to their box), augmented deterministically per (seed, epoch)."""

    def __init__(self, images: Sequence[Image], labels: Sequence[int], cfg: FcnnConfig,
                 seed: int) -> None:
        self.images, self.labels, self.cfg, self.seed = list(images), list(labels), cfg, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        im, cfg = self.images[i], self.cfg
        img = read_image(im.path, im.box if cfg.train_on_boxes else None)
        rng = np.random.default_rng([self.seed, self.epoch, i])
        h, w = img.shape[:2]
        area = rng.uniform(cfg.min_crop_area, 1.0) * h * w
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        cw = int(min(w, round(np.sqrt(area * aspect))))
        ch = int(min(h, round(np.sqrt(area / aspect))))
        x0 = int(rng.integers(0, w - cw + 1))
        y0 = int(rng.integers(0, h - ch + 1))
        img = cv2.resize(img[y0:y0 + ch, x0:x0 + cw], (cfg.image_size, cfg.image_size),
                         interpolation=cv2.INTER_AREA)
        if cfg.flip and rng.random() < 0.5:
            img = img[:, ::-1]
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))), self.labels[i]


def train_classifier(cfg: FcnnConfig, train: Sequence[Image], classes: list[str], *,
                     seed: int, device: str = "cpu", checkpoint: Path | None = None,
                     progress: Progress = NULL_PROGRESS, stop_after_epoch: int | None = None
                     ) -> tuple[BackboneNet, list[dict[str, float]]]:
    """Fine-tune `cfg.backbone` as a len(classes)-way classifier on `train`; returns the
    network and the per-epoch history. With `checkpoint`, state is saved after every
    epoch and a run finding one resumes from it. `stop_after_epoch` (for tests) returns
    early after that epoch, as an interruption would."""
    torch.manual_seed(seed)
    net = load_backbone(cfg.backbone, cfg.weights)
    net.replace_head(len(classes))
    stages = net.stages()
    for stage in stages[:cfg.frozen_stages]:
        for p in stage.parameters():
            p.requires_grad_(False)
    head = stages[-1]
    head_ids = {id(p) for p in head.parameters()}
    if hasattr(net.net, "classifier"):  # VGG: only the last Linear is new
        head_ids = {id(p) for p in net.net.classifier[6].parameters()}
    body = [p for p in net.parameters() if p.requires_grad and id(p) not in head_ids]
    new = [p for p in net.parameters() if p.requires_grad and id(p) in head_ids]
    optimizer = torch.optim.SGD([{"params": body, "lr": cfg.learning_rate},
                                 {"params": new, "lr": cfg.head_learning_rate}],
                                momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    label_of = {c: i for i, c in enumerate(classes)}
    data = TrainImages(train, [label_of[im.label] for im in train], cfg, seed)
    steps_per_epoch = -(-len(data) // cfg.train_batch_size)
    total = max(1, cfg.epochs * steps_per_epoch)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + np.cos(np.pi * min(step, total) / total)))
    net.to(device)
    history, start = resume(checkpoint, net, optimizer, schedule, device=device)
    loss_fn = nn.CrossEntropyLoss()
    with progress.task(f"fine-tune {cfg.backbone} ({len(classes)} classes)",
                       total=cfg.epochs * len(data)) as advance:
        advance(start * len(data))
        for epoch in range(start, cfg.epochs):
            data.epoch = epoch
            order = torch.Generator().manual_seed(seed * 1000 + epoch)
            loader = torch.utils.data.DataLoader(data, batch_size=cfg.train_batch_size,
                                                 shuffle=True, generator=order)
            net.train()
            for module in net.modules():  # frozen batch-norm statistics
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
            seen, correct, loss_sum = 0, 0, 0.0
            for x, y in loader:
                x, y = x.to(device).float(), y.to(device)
                logits = net.logits(x)
                loss = loss_fn(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                seen += len(y)
                loss_sum += float(loss.detach()) * len(y)
                correct += int((logits.argmax(1) == y).sum())
                advance(len(y), status=f"epoch {epoch + 1}/{cfg.epochs} loss "
                                       f"{loss_sum / seen:.3f} acc {100 * correct / seen:.0f}%")
            history.append({"epoch": epoch + 1, "loss": loss_sum / seen,
                            "accuracy": correct / seen})
            log.info("fine-tune epoch %d/%d: loss %.4f, train accuracy %.1f%%", epoch + 1,
                     cfg.epochs, loss_sum / seen, 100 * correct / seen)
            if checkpoint is not None:
                save_checkpoint(checkpoint, net, optimizer, history, epoch + 1, schedule)
            if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
                break
    return net.eval(), history


class FcnnMethod(CnnMethod):
    """F-CNN: the backbone fine-tuned as a classifier on the train split, then `cnn`."""

    name = "fcnn"
    description = "F-CNN: backbone fine-tuned as a classifier on the train split, then FC7"
    Config = FcnnConfig
    contract_overrides: ClassVar[dict[str, Any]] = {"backbone": "efficientnet-lite0",
                                                    "epochs": 1}
    stages: ClassVar[Mapping[str, Stage]] = {
        "network": Stage(),
        "finetune": Stage(after=("network",), seeded=True),
        "features": Stage(after=("finetune",)),
    }

    def __init__(self, config: Any = None, context: Any = None) -> None:
        super().__init__(config, context)
        self._network_id = ""

    def feature_inputs(self) -> dict[str, Any]:
        if not self._network_id:
            raise RuntimeError("fcnn: fit() fine-tunes the network; call it before index()")
        return {"network": self._network_id}

    def fit(self, train: Sequence[Image]) -> None:
        cfg = self.config
        labelled = [im for im in train if im.label is not None]
        classes = sorted({im.label for im in labelled})
        if len(classes) < 2:
            raise ConfigError(f"fcnn needs a train split with at least 2 labelled classes; "
                              f"this dataset has {len(labelled)} labelled train images in "
                              f"{len(classes)} class(es)")
        inputs = {"train": self.context.identify(tuple(labelled)), "classes": classes}
        checkpoint = checkpoint_path(self, "finetune", inputs)
        history: list[dict[str, float]] = []

        def compute() -> dict[str, Any]:
            check_decodable(labelled, workers=self.context.workers)
            net, hist = train_classifier(cfg, labelled, classes, seed=self.context.seed,
                                         device=self.context.device, checkpoint=checkpoint,
                                         progress=self.context.progress)
            history.extend(hist)
            state = {f"w/{k}": v.detach().cpu().numpy() for k, v in net.state_dict().items()}
            return {**state, "history": hist, "classes": classes}

        art = self.cached("finetune", compute, inputs=inputs)
        net = build_backbone(cfg.backbone)
        net.replace_head(len(classes))
        net.load_state_dict({k[2:]: torch.from_numpy(np.array(v)) for k, v in art.items()
                             if k.startswith("w/")})
        self._net = prepare(net, self.context.device, cfg.channels_last)
        self._network_id = art.id
        if checkpoint is not None and checkpoint.is_file():
            checkpoint.unlink()  # the finished weights are in the cache now
        self._info.update({"finetuned_classes": len(classes),
                           "finetuned_images": len(labelled),
                           "finetune_history": art.get("history", history)})
        if cfg.whitening == "pca":
            self._whitening = self.learn_whitening()

    def network(self) -> BackboneNet:
        if self._net is None:
            raise RuntimeError("fcnn: fit() fine-tunes the network; call it before index()")
        return self._net
