"""VQ-VAE: a convolutional encoder to a grid of discrete codes, an EMA codebook that restarts unused codes, a mirrored decoder.

The encoder and decoder are parameters of one `VQVAE`: the image level builds strided convolutions
(256 px -> a 32x32 grid by default), the patch level takes the small 63x63 patch auto-encoder's
design; the quantiser, the prior over its codes and the restoration are the same for both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResBlock(nn.Module):
    """ReLU, 3x3 conv, ReLU, 1x1 conv, added to the input (the paper's residual block)."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def image_encoder(hidden: int, code_dim: int, downsample: int, res_blocks: int) -> nn.Module:
    """(N, 3, H, W) in [0, 1] -> (N, code_dim, H/downsample, W/downsample): 4x4 stride-2 convs, a 3x3 conv, residual blocks."""
    layers: list[nn.Module] = []
    channels = 3
    steps = downsample.bit_length() - 1
    for step in range(steps):
        out = hidden if step == steps - 1 else max(hidden // 2, 8)
        layers += [nn.Conv2d(channels, out, 4, stride=2, padding=1), nn.ReLU()]
        channels = out
    layers.append(nn.Conv2d(channels, hidden, 3, padding=1))
    layers += [ResBlock(hidden, hidden // 2) for _ in range(res_blocks)]
    layers += [nn.ReLU(), nn.Conv2d(hidden, code_dim, 1)]
    return nn.Sequential(*layers)


def image_decoder(hidden: int, code_dim: int, downsample: int, res_blocks: int) -> nn.Module:
    """The encoder mirrored: (N, code_dim, h, w) -> (N, 3, h*downsample, w*downsample), transposed convolutions."""
    layers: list[nn.Module] = [nn.Conv2d(code_dim, hidden, 3, padding=1)]
    layers += [ResBlock(hidden, hidden // 2) for _ in range(res_blocks)]
    layers.append(nn.ReLU())
    channels = hidden
    steps = downsample.bit_length() - 1
    for step in range(steps):
        last = step == steps - 1
        out = 3 if last else max(hidden // 2, 8)
        layers.append(nn.ConvTranspose2d(channels, out, 4, stride=2, padding=1))
        if not last:
            layers.append(nn.ReLU())
        channels = out
    return nn.Sequential(*layers)


class VectorQuantizer(nn.Module):
    """Nearest-codebook-vector quantisation with exponential-moving-average updates and restarts of unused codes.

    The codebook (K, D) starts from N(0, 1) as in the paper. While training, each step moves every
    code towards the mean of the encoder outputs assigned to it (EMA, `decay`), and a code whose
    running assignment count falls below `restart_below` is moved onto a random encoder output of
    the batch, so that the codebook does not collapse onto a few codes.
    """

    def __init__(self, codes: int, dim: int, decay: float = 0.99, restart_below: float = 1.0, eps: float = 1e-5) -> None:
        super().__init__()
        self.codes, self.dim, self.decay, self.restart_below, self.eps = codes, dim, decay, restart_below, eps
        embedding = torch.randn(codes, dim)
        self.register_buffer("embedding", embedding)
        self.register_buffer("cluster_size", torch.ones(codes))
        self.register_buffer("embedding_sum", embedding.clone())
        self.register_buffer("restarts", torch.zeros((), dtype=torch.int64))

    def assign(self, z: torch.Tensor) -> torch.Tensor:
        """(N, D, h, w) encoder outputs -> (N, h, w) int64 indices of the nearest codes."""
        n, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        distances = (flat * flat).sum(1, keepdim=True) - 2 * flat @ self.embedding.t() + (self.embedding * self.embedding).sum(1)[None]
        return distances.argmin(1).view(n, h, w)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """(N, h, w) int64 -> (N, D, h, w) codebook vectors."""
        return F.embedding(codes, self.embedding).permute(0, 3, 1, 2)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> quantised z with straight-through gradients, the codes, and the commitment loss ||z - sg[z_q]||^2."""
        codes = self.assign(z.detach())
        quantised = self.lookup(codes)
        if self.training:
            self._update(z.detach(), codes)
        commitment = F.mse_loss(z, quantised.detach())
        return z + (quantised - z).detach(), codes, commitment

    @torch.no_grad()
    def _update(self, z: torch.Tensor, codes: torch.Tensor) -> None:
        flat = z.permute(0, 2, 3, 1).reshape(-1, self.dim)
        onehot = F.one_hot(codes.reshape(-1), self.codes).to(flat.dtype)
        self.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.embedding_sum.mul_(self.decay).add_(onehot.t() @ flat, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + self.codes * self.eps) * total  # Laplace smoothing
        self.embedding.copy_(self.embedding_sum / smoothed[:, None])
        self.restart_unused(flat)

    @torch.no_grad()
    def restart_unused(self, flat: torch.Tensor) -> int:
        """Move every code used less than `restart_below` (running count) onto a random row of `flat` (M, D); how many moved."""
        dead = torch.nonzero(self.cluster_size < self.restart_below).flatten()
        if dead.numel() == 0:
            return 0
        picks = flat[torch.randint(0, flat.shape[0], (dead.numel(),), device=flat.device)]
        self.embedding[dead] = picks
        self.embedding_sum[dead] = picks
        self.cluster_size[dead] = 1.0
        self.restarts += dead.numel()
        return int(dead.numel())


class VQVAE(nn.Module):
    """Encoder, quantiser, decoder; images in [0, 1] (N, 3, H, W)."""

    def __init__(self, encoder: nn.Module, quantizer: VectorQuantizer, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder, self.quantizer, self.decoder = encoder, quantizer, decoder

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> reconstruction, codes (N, h, w), commitment loss."""
        quantised, codes, commitment = self.quantizer(self.encoder(x))
        return self.decoder(quantised), codes, commitment

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantizer.assign(self.encoder(x))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.quantizer.lookup(codes))


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float in [0, 1]."""
    return images.permute(0, 3, 1, 2).float() / 255.0


class EncoderGraph(nn.Module):
    """The exported `encoder` graph: uint8 images (N, H, W, 3) -> codes (N, h, w) int64."""

    def __init__(self, vqvae: VQVAE) -> None:
        super().__init__()
        self.vqvae = vqvae

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.vqvae.encode(to_unit(images))


class DecoderGraph(nn.Module):
    """The exported `decoder` graph: codes (N, h, w) int64 -> images (N, 3, H, W) float32 in [0, 1]."""

    def __init__(self, vqvae: VQVAE) -> None:
        super().__init__()
        self.vqvae = vqvae

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.vqvae.decode(codes).clamp(0.0, 1.0)
