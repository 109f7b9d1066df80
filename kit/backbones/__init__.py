"""Feature backbones by name: each maps a normalised image to stride-8 and stride-16 feature maps."""

from __future__ import annotations

from pathlib import Path

from edgead.errors import ConfigError

from .base import FeatureBackbone
from .efficientnet_lite import efficientnet_lite0_features, efficientnet_lite1_features, efficientnet_lite2_features
from .wide_resnet import wide_resnet50_2_features

__all__ = ["BACKBONES", "FeatureBackbone", "build_backbone"]

_BUILDERS = {
    "efficientnet_lite0": efficientnet_lite0_features,
    "efficientnet_lite1": efficientnet_lite1_features,
    "efficientnet_lite2": efficientnet_lite2_features,
    "wide_resnet50_2": wide_resnet50_2_features,
}
BACKBONES = tuple(_BUILDERS)


def build_backbone(name: str, weights: str | Path | None = None, pretrained: bool = True) -> FeatureBackbone:
    """The named backbone in eval mode.

    weights: a state_dict file (.pth or .safetensors) in the backbone's own key names; None takes
    the default ImageNet weights where edgead can find them offline (EfficientNet-Lite0/1/2).
    pretrained=False: random weights, for tests and for loading a state_dict afterwards.
    """
    builder = _BUILDERS.get(name)
    if builder is None:
        raise ConfigError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}")
    if weights is not None and not pretrained:
        raise ConfigError(f"weights {weights} were given for {name} with pretrained=False; pass one or the other")
    return builder(weights=weights, pretrained=pretrained)
