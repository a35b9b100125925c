"""`cnn`: the global CNN baseline of the seed paper and the pooled descriptors users
compare it with.

Mei et al. 2018, Sec. 3.2 and 4.3: every image resized to 224 x 224, the 4,096-D FC7
output of ImageNet VGG16 (Simonyan and Zisserman 2015), L2-normalized, cosine
similarity; "CNN + full / cropped query" is `query_crop=full|box`. On the same backbone,
`pooling` picks MAC, SPoC, GeM, R-MAC or CroW over the last convolutional map instead
(each cited in `irbench.methods.cnn.pooling`), computed on the image scaled down to at
most `conv_max_size` on its longer side.

Choices the paper leaves open, with their defaults: FC7 is taken after its ReLU
(`fc7_after_relu=true`, as Caffe's in-place `relu7` leaves the `fc7` blob the paper's
era read); the resize is a plain anisotropic 224 x 224 (no center crop); no whitening.
Optional PCA-whitening (Jégou and Chum, ECCV 2012) is learned on an independent dataset
(`whitening_set`), never on the one being evaluated; the set and its size are recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from irbench.core.config import param
from irbench.core.search import l2_normalize
from irbench.datasets.base import Image, Query
from irbench.datasets.registry import split_dataset_name
from irbench.errors import ConfigError
from irbench.methods.base import NO_STAGE, QUERY_STAGE, GlobalDescriptorMethod, Stage
from irbench.methods.cnn import pooling
from irbench.methods.cnn.backbones import BackboneNet, load_backbone
from irbench.methods.cnn.extract import Resize, extract, prepare

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CnnConfig:
    backbone: str = param("vgg16", "registered backbone: vgg16 (the paper's), resnet50, "
                                   "resnet101, efficientnet-lite0", stage="network")
    weights: str = param("imagenet", "imagenet | none (random, marked untrained) | PATH to "
                                     "a state dict", stage="network")
    pooling: str = param("fc7", "fc7 (the paper: the layer feeding the classifier, VGG16's "
                                "FC7) | mac | spoc | gem | rmac | crow", choices=pooling.POOLINGS, stage="features")
    fc7_after_relu: bool = param(True, "VGG16 FC7 after its ReLU (Caffe's in-place relu7)", stage="features")
    image_size: int = param(224, "fc7: images resized to this square (the paper: 224)",
                            minimum=16, stage="network")
    conv_max_size: int = param(1024, "pooled conv descriptors: longer image side at most "
                                     "this many pixels (never enlarged)", stage="features")
    gem_p: float = param(3.0, "GeM exponent p", minimum=0.01, stage="features")
    rmac_levels: int = param(3, "R-MAC scales L", minimum=1, stage="features")
    query_crop: str = param("box", "box: crop queries to their box when the protocol does "
                                    "(CNN + cropped query); full: whole query image",
                            choices=("box", "full"), stage="features")
    whitening: str = param("none", "none | pca: PCA-whitening learned on whitening_set",
                           choices=("none", "pca"), stage=QUERY_STAGE)
    whitening_set: str = param("", "dataset the whitening is learned on (its database "
                                    "images); must differ from the evaluated one", stage=QUERY_STAGE)
    whitening_dim: int = param(0, "dimensions kept after whitening (0: all)", minimum=0, stage=QUERY_STAGE)
    precision: str = param("fp32", "fp32 | bf16 (autocast; see benchmarks/bench_cnn.py)",
                           choices=("fp32", "bf16"), stage="features")
    batch_size: int = param(16, "images per forward pass (fc7)", minimum=1, stage=NO_STAGE)
    channels_last: bool = param(True, "channels-last memory format", stage=NO_STAGE)


class CnnMethod(GlobalDescriptorMethod):
    """Global CNN descriptor: FC7 of VGG16 (the paper's baseline) or a pooled conv map."""

    name = "cnn"
    description = "Global CNN descriptor: VGG16 FC7 (the paper's) or MAC/SPoC/GeM/R-MAC/CroW"
    Config = CnnConfig
    contract_overrides: ClassVar[dict[str, Any]] = {"backbone": "efficientnet-lite0"}
    stages: ClassVar[Mapping[str, Stage]] = {
        "network": Stage(),  # the backbone as loaded: no artifact of its own
        "features": Stage(after=("network",)),
    }

    def __init__(self, config: Any = None, context: Any = None) -> None:
        super().__init__(config, context)
        self._net: BackboneNet | None = None
        self._whitening: dict[str, np.ndarray] | None = None
        self._info.update({"backbone": self.config.backbone, "weights": self.config.weights})

    # -- the network ---------------------------------------------------------------------

    def network(self) -> BackboneNet:
        if self._net is None:
            self._net = prepare(load_backbone(self.config.backbone, self.config.weights),
                                self.context.device, self.config.channels_last)
        return self._net

    def describe(self, x: torch.Tensor) -> torch.Tensor:
        cfg, net = self.config, self.network()
        if cfg.pooling == "fc7":
            return net.penultimate(x, after_relu=cfg.fc7_after_relu)
        fmap = net.conv(x)
        if cfg.pooling == "mac":
            return pooling.mac(fmap)
        if cfg.pooling == "spoc":
            return pooling.spoc(fmap)
        if cfg.pooling == "gem":
            return pooling.gem(fmap.float(), cfg.gem_p)
        if cfg.pooling == "rmac":
            return pooling.rmac(fmap, cfg.rmac_levels)
        return pooling.crow(fmap)

    def resize(self) -> Resize:
        cfg = self.config
        return (Resize("square", cfg.image_size) if cfg.pooling == "fc7"
                else Resize("max_side", cfg.conv_max_size))

    def encode(self, images: Sequence[Image | Query]) -> np.ndarray:
        items = []
        for im in images:
            box = im.crop_box if isinstance(im, Query) and self.config.query_crop == "box" \
                else None
            items.append((str(im.path), box))
        return extract(self.network(), self.describe, items, self.resize(),
                       batch_size=self.config.batch_size, workers=self.context.workers,
                       device=self.context.device, precision=self.config.precision,
                       channels_last=self.config.channels_last)

    # -- whitening -----------------------------------------------------------------------

    def fit(self, train: Sequence[Image]) -> None:
        if self.config.whitening == "pca":
            self._whitening = self.learn_whitening()

    def learn_whitening(self) -> dict[str, np.ndarray]:
        """PCA-whitening (Jégou and Chum 2012) on the L2-normalized descriptors of the
        database images of `whitening_set`: x -> diag(λ^-1/2) Vᵀ (x - μ)."""
        cfg = self.config
        if not cfg.whitening_set:
            raise ConfigError("whitening=pca needs whitening_set=<dataset> (an independent "
                              "set, e.g. --set whitening_set=demo)")
        if split_dataset_name(cfg.whitening_set)[0] == self.context.dataset_name:
            raise ConfigError(f"whitening_set={cfg.whitening_set} is the evaluated dataset: "
                              "learn the whitening on an independent set")
        if self.context.load_dataset is None:
            raise ConfigError(f"whitening_set={cfg.whitening_set}: this run context cannot "
                              "load other datasets (run through irbench.run)")
        wds = self.context.load_dataset(cfg.whitening_set)
        wid = f"{wds.name}@{wds.version}"
        x = super().features(f"whitening set {wid}", wds.database)
        mean = x.mean(axis=0)
        cov = np.cov((x - mean).T.astype(np.float64))
        eigval, eigvec = np.linalg.eigh(cov)
        order = np.argsort(eigval)[::-1]
        eigval, eigvec = eigval[order], eigvec[:, order]
        keep = min(cfg.whitening_dim or len(eigval), len(eigval), max(1, len(x) - 1))
        proj = (eigvec[:, :keep] / np.sqrt(np.maximum(eigval[:keep], 1e-9))).T
        self._info.update({"whitening": "pca", "whitening_set": wid,
                           "whitening_images": len(x), "whitening_dim": int(keep)})
        return {"mean": mean.astype(np.float32), "projection": proj.astype(np.float32)}

    def features(self, role: str, images: Sequence[Image | Query]) -> np.ndarray:
        feats = super().features(role, images)
        if self._whitening is not None:
            w = self._whitening
            feats = l2_normalize((feats - w["mean"]) @ w["projection"].T)
        return feats

    def untrained(self) -> bool:
        return str(self.config.weights).lower() == "none"

    def info(self) -> dict[str, Any]:
        out = super().info()
        out["feature_dim"] = int(getattr(self, "_database", np.zeros((0, 0))).shape[1])
        return out
