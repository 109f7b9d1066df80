"""The small patch auto-encoder of 2307.02495: 63x63 RGB patches, four convolutional blocks down to a 17x17x16 latent.

The encoder and decoder are separate modules so that other detectors can reuse them (a VQ-VAE quantises the
same latent grid). `PatchGraph` is what is exported for stride-based patches: uint8 patches in, the per-pixel
squared reconstruction error and the latent codes out, so that only one channel per pixel comes back from the
engine. `DenseGraph` runs the same convolutions once over a whole frame (or a tile of any size): the two
stride-2 layers make frame positions a multiple of LATENT_STEP_PX apart equivalent, so the latent code of the
patch at origin (4i, 4j) is the 17x17 window at (i, j) of the frame's latent grid, up to the patch borders'
zero padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PATCH_PX = 63
LATENT_CHANNELS = 16
LATENT_PX = 17
LATENT_SHAPE = (LATENT_CHANNELS, LATENT_PX, LATENT_PX)  # (C, h, w) of one patch's code
HIDDEN = (8, 16)  # channels of the first and the inner blocks
LATENT_STEP_PX = 4  # frame pixels per latent cell: the two stride-2 layers
# frames are padded by this much at the bottom and right (reflected) so that the decoder's output covers every
# pixel: for an input of 4m + 3 px the network gives back 4m + 3 px, for any other size the next smaller 4m - 1
DENSE_PAD_PX = 3


def _block(conv: nn.Module) -> nn.Sequential:
    return nn.Sequential(conv, nn.LeakyReLU(0.2))


class SmallEncoder(nn.Module):
    """(N, 3, 63, 63) float in [0, 1] -> latent (N, 16, 17, 17): 63 -> 63 -> 32 -> 32 -> 17 px."""

    def __init__(self, hidden: tuple[int, int] = HIDDEN, latent_channels: int = LATENT_CHANNELS) -> None:
        super().__init__()
        first, inner = hidden
        self.blocks = nn.Sequential(
            _block(nn.Conv2d(3, first, 3, stride=1, padding=1)),
            _block(nn.Conv2d(first, inner, 3, stride=2, padding=1)),
            _block(nn.Conv2d(inner, inner, 3, stride=1, padding=1)),
            nn.Conv2d(inner, latent_channels, 4, stride=2, padding=2),  # linear: the codes are not clipped
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class SmallDecoder(nn.Module):
    """Latent (N, 16, 17, 17) -> reconstruction (N, 3, 63, 63) in [0, 1]: the encoder mirrored."""

    def __init__(self, hidden: tuple[int, int] = HIDDEN, latent_channels: int = LATENT_CHANNELS) -> None:
        super().__init__()
        first, inner = hidden
        self.blocks = nn.Sequential(
            _block(nn.ConvTranspose2d(latent_channels, inner, 4, stride=2, padding=2)),
            _block(nn.Conv2d(inner, inner, 3, stride=1, padding=1)),
            _block(nn.ConvTranspose2d(inner, first, 3, stride=2, padding=1)),
            nn.Conv2d(first, 3, 3, stride=1, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.blocks(z)


class SmallAutoEncoder(nn.Module):
    """Encoder and decoder: (N, 3, 63, 63) in [0, 1] -> (reconstruction, latent)."""

    def __init__(self, hidden: tuple[int, int] = HIDDEN, latent_channels: int = LATENT_CHANNELS) -> None:
        super().__init__()
        self.encoder = SmallEncoder(hidden, latent_channels)
        self.decoder = SmallDecoder(hidden, latent_channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(x)
        return self.decoder(z), z


def to_unit(patches: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 63, 63, 3) RGB patches -> float (N, 3, 63, 63) in [0, 1]."""
    return patches.permute(0, 3, 1, 2).float() / 255.0


class PatchGraph(nn.Module):
    """The exported graph: uint8 (N, 63, 63, 3) patches -> error (N, 63, 63), latent (N, 16, 17, 17).

    error is the squared difference between patch and reconstruction, averaged over the colour channels.
    """

    def __init__(self, autoencoder: SmallAutoEncoder) -> None:
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = to_unit(patches)
        reconstruction, latent = self.autoencoder(x)
        return ((reconstruction - x) ** 2).mean(dim=1), latent


def dense_latent_px(frame_px: int) -> int:
    """Latent cells along a frame side of `frame_px` in the dense graph (the frame padded by DENSE_PAD_PX)."""
    return (frame_px + DENSE_PAD_PX + 1) // LATENT_STEP_PX + 1


class DenseGraph(nn.Module):
    """The exported dense graph: uint8 frames (N, H, W, 3) -> error (N, H, W), latent (N, 16, h, w), any H, W >= 63.

    h = dense_latent_px(H). The frame is reflected by DENSE_PAD_PX at the bottom and right, so that the
    reconstruction covers it, and the error is cut back to (H, W). The convolutions are the patch graph's.
    """

    def __init__(self, autoencoder: SmallAutoEncoder) -> None:
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = to_unit(frames)
        padded = F.pad(x, (0, DENSE_PAD_PX, 0, DENSE_PAD_PX), mode="reflect")
        reconstruction, latent = self.autoencoder(padded)
        height, width = x.shape[2], x.shape[3]
        error = ((reconstruction[:, :, :height, :width] - x) ** 2).mean(dim=1)
        return error, latent


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
