"""WideResNet-50-2 up to layer3, with torchvision's module names so its state_dict loads as is.

Bottlenecks as torchvision's (ResNet v1.5: the stride sits on the 3x3 conv), width 128 per
group; BatchNorm eps 1e-5; ImageNet normalisation. layer4 and fc are never built: their keys
in a torchvision checkpoint are ignored.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from edgead.errors import ConfigError

from .base import FeatureBackbone, load_checked, read_state_dict

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_WIDTH_FACTOR = 2  # wide_resnet50_2: width_per_group 128 = 2 x 64
_EXPANSION = 4
_UNUSED_PREFIXES = ("layer4.", "fc.")
_NO_WEIGHTS = (
    "WideResNet-50-2 needs ImageNet weights: pass --weights PATH "
    "(torchvision's wide_resnet50_2 state_dict, e.g. wide_resnet50_2-95faca4d.pth)"
)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4; projection shortcut when the shape changes."""

    def __init__(self, in_ch: int, planes: int, stride: int) -> None:
        super().__init__()
        width = planes * _WIDTH_FACTOR
        out_ch = planes * _EXPANSION
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + identity)


def _layer(in_ch: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [Bottleneck(in_ch, planes, stride)]
    layers += [Bottleneck(planes * _EXPANSION, planes, 1) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class WideResNet50Features(FeatureBackbone):
    """Stem, layer1-3: features from layer2 (512 ch, stride 8) and layer3 (1024 ch, stride 16)."""

    name = "wide_resnet50_2"
    feature_channels = (512, 1024)
    feature_strides = (8, 16)
    mean = IMAGENET_MEAN
    std = IMAGENET_STD
    input_multiple_px = 16

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = _layer(64, 64, 3, 1)
        self.layer2 = _layer(256, 128, 4, 2)
        self.layer3 = _layer(512, 256, 6, 2)
        for m in self.modules():  # torchvision's initialisation, for the random-weight build
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        stride8 = self.layer2(self.layer1(x))
        return stride8, self.layer3(stride8)


def wide_resnet50_2_features(
    weights: str | Path | None = None, pretrained: bool = True
) -> WideResNet50Features:
    """The truncated WRN-50-2 in eval mode; `weights` is a torchvision state_dict (.pth or .safetensors)."""
    model = WideResNet50Features()
    if pretrained:
        if weights is None:
            raise ConfigError(_NO_WEIGHTS)
        load_checked(model, read_state_dict(weights), str(weights), ignore_prefixes=_UNUSED_PREFIXES)
    return model.eval()
