"""Feature backbones by name: each maps a normalised image to a stride-8 feature map and deeper ones (stride 16 or 32)."""

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
# backbones with one fixed pair of feature maps, in the stage numbering of --feature-stages (WRN: layer2, layer3)
_OWN_STAGES = {"wide_resnet50_2": (2, 3)}


def build_backbone(
    name: str, weights: str | Path | None = None, pretrained: bool = True, stages: tuple[int, ...] | None = None
) -> FeatureBackbone:
    """The named backbone in eval mode.

    weights: a state_dict file (.pth or .safetensors) in the backbone's own key names; None takes
    the default ImageNet weights where edgead can find them offline (EfficientNet-Lite0/1/2).
    pretrained=False: random weights, for tests and for loading a state_dict afterwards.
    stages: the backbone stages whose outputs make the feature, stride-8 first; None: the backbone's own pair.
    """
    builder = _BUILDERS.get(name)
    if builder is None:
        raise ConfigError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}")
    if weights is not None and not pretrained:
        raise ConfigError(f"weights {weights} were given for {name} with pretrained=False; pass one or the other")
    own = _OWN_STAGES.get(name)
    if stages is None or (own is not None and tuple(stages) == own):
        return builder(weights=weights, pretrained=pretrained)
    if own is not None:
        raise ConfigError(
            f"{name} gives its own two feature maps only, stages {','.join(map(str, own))}; got --feature-stages "
            f"{','.join(map(str, stages))}: pass {','.join(map(str, own))} or pick an efficientnet_lite backbone"
        )
    return builder(weights=weights, pretrained=pretrained, stages=tuple(stages))
