"""Locally aware patch features: the graph that is exported, from uint8 image to patch features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def channel_pooling_matrix(in_channels: int, out_channels: int) -> torch.Tensor:
    """(out, in) weights that average channels the way adaptive_avg_pool1d does, as a fixed 1x1 conv."""
    weights = torch.zeros(out_channels, in_channels)
    for i in range(out_channels):
        start = (i * in_channels) // out_channels
        end = -((-(i + 1) * in_channels) // out_channels)  # ceil
        weights[i, start:end] = 1.0 / (end - start)
    return weights


class PatchFeatureModel(nn.Module):
    """uint8 RGB images (N, H, W, 3) -> patch features (N, C, H/8, W/8), float32.

    Holds preprocessing (scale, normalise, NHWC->NCHW), the truncated backbone, neighbourhood
    averaging of each stage, the deeper stages upsampled onto the stride-8 grid and concatenated,
    and an optional fixed channel pooling. Everything after (kNN, maps) lives in the runtime.
    """

    def __init__(
        self, backbone: nn.Module, patch_cells: int = 3, feature_dim: int | None = None, reflect_pad_px: int = 0,
        pool_zero_pad: bool = False,
    ) -> None:
        super().__init__()
        # border cells of the neighbourhood average: zeros counted in (anomalib's AvgPool2d) or left out
        self.pool_zero_pad = pool_zero_pad
        self.backbone = backbone
        self.patch_cells = patch_cells
        self.reflect_pad_px = reflect_pad_px
        mean = torch.tensor(backbone.mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(backbone.std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        self.register_buffer("mean_255", mean, persistent=False)
        self.register_buffer("std_255", std, persistent=False)
        total = sum(backbone.feature_channels)
        self.out_channels = feature_dim if feature_dim is not None and feature_dim < total else total
        if self.out_channels < total:
            self.register_buffer("pooling", channel_pooling_matrix(total, self.out_channels)[:, :, None, None], persistent=False)
        else:
            self.pooling = None
        self.stride_px = backbone.feature_strides[0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # cast first: TensorRT wants a uint8 network input to feed a Cast directly
        x = images.to(self.mean_255.dtype).permute(0, 3, 1, 2).contiguous()  # NCHW-contiguous: 7x faster convs on CPU
        x = (x - self.mean_255) / self.std_255
        pad = self.reflect_pad_px
        if pad:
            # mirrored context instead of the network's zero padding: border patches look like interior ones
            x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        maps = self.backbone(x)  # the stride-8 stage first, then deeper ones (stride 16 or 32)
        if self.patch_cells > 1:
            half = self.patch_cells // 2
            maps = [F.avg_pool2d(m, self.patch_cells, stride=1, padding=half, count_include_pad=self.pool_zero_pad) for m in maps]
        shallow = maps[0]
        deep = [F.interpolate(m, size=shallow.shape[-2:], mode="bilinear", align_corners=False) for m in maps[1:]]
        features = torch.cat([shallow, *deep], dim=1)
        if self.pooling is not None:
            features = F.conv2d(features, self.pooling)
        if pad:
            cells = pad // self.stride_px
            features = features[:, :, cells : features.shape[2] - cells, cells : features.shape[3] - cells]
        return features
