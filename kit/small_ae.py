"""The small patch auto-encoder of 2307.02495: 63x63 RGB patches, four convolutional blocks down to a 17x17x16 latent.

The encoder and decoder are separate modules so that other detectors can reuse them (a VQ-VAE quantises the
same latent grid). `PatchGraph` is what is exported for stride-based patches: uint8 patches in, the per-pixel
squared reconstruction error and the latent codes out, so that only one channel per pixel comes back from the
engine. The error can be measured on a low-pass level (ErrorSettings): the difference between input and
reconstruction is Gaussian-smoothed before it is squared, so that the fine texture a 15k-parameter network cannot
rebuild (grass blades, gravel grain: zero-mean residue) averages out, while a region it rebuilds in the wrong
colour or brightness (a stain, a scratch) keeps its error; and a texture term flags regions whose local error
energy is unusually high or unusually low (a smooth stain or a coarser texture is rebuilt too well). `DenseGraph` runs the same convolutions once over a whole frame (or a tile of any size): the two
stride-2 layers make frame positions a multiple of LATENT_STEP_PX apart equivalent, so the latent code of the
patch at origin (4i, 4j) is the 17x17 window at (i, j) of the frame's latent grid, up to the patch borders'
zero padding.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

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


def gaussian_taps(sigma_px: float, radius: int | None = None) -> torch.Tensor:
    """The 1-D Gaussian of `sigma_px` over -radius..radius (default 3 sigma, at least one tap each side), summing to 1."""
    radius = max(1, math.ceil(3 * sigma_px)) if radius is None else radius
    coords = torch.arange(-radius, radius + 1, dtype=torch.float32)
    taps = torch.exp(-(coords**2) / (2 * sigma_px**2))
    return taps / taps.sum()


class GaussianBlur(nn.Module):
    """(N, C, H, W) -> (N, C, H, W) Gaussian-smoothed by `sigma_px`, separable, reflected borders (H, W > 3 sigma)."""

    def __init__(self, channels: int, sigma_px: float) -> None:
        super().__init__()
        taps = gaussian_taps(sigma_px)
        self.radius = (len(taps) - 1) // 2
        self.channels = channels
        # constants of the graph, not weights: kept out of the state dict
        self.register_buffer("rows", taps.reshape(1, 1, -1, 1).repeat(channels, 1, 1, 1), persistent=False)
        self.register_buffer("cols", taps.reshape(1, 1, 1, -1).repeat(channels, 1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.radius
        x = F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), self.rows, groups=self.channels)
        return F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), self.cols, groups=self.channels)


TEXTURE_EPS = 1e-6  # added to the local error energy before its log: a perfectly rebuilt region stays finite


@dataclass(frozen=True)
class ErrorSettings:
    """How the graphs turn a reconstruction into its error map; the defaults are the paper's per-pixel squared error.

    lowpass: the difference between input and reconstruction is Gaussian-smoothed by `lowpass_sigma_px` before it
    is squared (averaged over the colour channels), then divided by `lowpass_scale`.
    texture (where `texture_weight` > 0): the local energy of the raw squared error (Gaussian of
    `texture_sigma_px`) is compared with its typical level on good frames, both ways, on a log scale:
    |log(energy + eps) - texture_log_ref| / texture_scale. A surface the auto-encoder rebuilds unusually well
    (a smooth stain, a coarser patch of texture) is as anomalous as one it rebuilds unusually badly.
    The scales and the reference are fitted on good frames (`fit_error_settings`), so that both terms are in
    units of their 99th percentile there.
    """

    lowpass_sigma_px: float = 0.0
    lowpass_scale: float = 1.0
    texture_sigma_px: float = 0.0
    texture_weight: float = 0.0
    texture_log_ref: float = 0.0
    texture_scale: float = 1.0

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> ErrorSettings:
        return cls(**(data or {}))


class ErrorMap(nn.Module):
    """(reconstruction, x) (N, 3, H, W) -> error (N, H, W) as `settings` say (ErrorSettings)."""

    def __init__(self, settings: ErrorSettings = ErrorSettings()) -> None:
        super().__init__()
        self.settings = settings
        self.lowpass = GaussianBlur(3, settings.lowpass_sigma_px) if settings.lowpass_sigma_px > 0 else None
        self.texture = GaussianBlur(1, settings.texture_sigma_px) if settings.texture_weight > 0 else None

    def parts(self, reconstruction: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(low-passed squared error (N, H, W), local energy of the squared error (N, H, W), or None without texture)."""
        difference = reconstruction - x
        squared = difference**2
        lowpass = squared.mean(dim=1) if self.lowpass is None else (self.lowpass(difference) ** 2).mean(dim=1)
        energy = None if self.texture is None else self.texture(squared.mean(dim=1, keepdim=True))[:, 0]
        return lowpass, energy

    def forward(self, reconstruction: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        s = self.settings
        lowpass, energy = self.parts(reconstruction, x)
        error = lowpass if s.lowpass_scale == 1.0 else lowpass / s.lowpass_scale
        if energy is not None:
            error = error + (s.texture_weight / s.texture_scale) * (torch.log(energy + TEXTURE_EPS) - s.texture_log_ref).abs()
        return error


class PatchGraph(nn.Module):
    """The exported graph: uint8 (N, 63, 63, 3) patches -> error (N, 63, 63), latent (N, 16, 17, 17).

    error is the squared difference between patch and reconstruction, averaged over the colour channels (by
    default; `error`: low-passed first, with a texture term, see ErrorSettings).
    """

    def __init__(self, autoencoder: SmallAutoEncoder, error: ErrorSettings = ErrorSettings()) -> None:
        super().__init__()
        self.autoencoder = autoencoder
        self.error = ErrorMap(error)

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = to_unit(patches)
        reconstruction, latent = self.autoencoder(x)
        return self.error(reconstruction, x), latent


def dense_latent_px(frame_px: int) -> int:
    """Latent cells along a frame side of `frame_px` in the dense graph (the frame padded by DENSE_PAD_PX)."""
    return (frame_px + DENSE_PAD_PX + 1) // LATENT_STEP_PX + 1


class DenseGraph(nn.Module):
    """The exported dense graph: uint8 frames (N, H, W, 3) -> error (N, H, W), latent (N, 16, h, w), any H, W >= 63.

    h = dense_latent_px(H). The frame is reflected by DENSE_PAD_PX at the bottom and right, so that the
    reconstruction covers it, and the reconstruction is cut back to (H, W) before the error (the patch graph's,
    computed over the frame). The convolutions are the patch graph's.
    """

    def __init__(self, autoencoder: SmallAutoEncoder, error: ErrorSettings = ErrorSettings()) -> None:
        super().__init__()
        self.autoencoder = autoencoder
        self.error = ErrorMap(error)

    def reconstruct(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """uint8 frames (N, H, W, 3) -> reconstruction and frames (N, 3, H, W) in [0, 1], latent (N, 16, h, w)."""
        x = to_unit(frames)
        padded = F.pad(x, (0, DENSE_PAD_PX, 0, DENSE_PAD_PX), mode="reflect")
        reconstruction, latent = self.autoencoder(padded)
        return reconstruction[:, :, : x.shape[2], : x.shape[3]], x, latent

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        reconstruction, x, latent = self.reconstruct(frames)
        return self.error(reconstruction, x), latent


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
