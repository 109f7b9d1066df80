"""A small PixelSNAIL: an autoregressive prior over code grids, p(z) = prod_i p(z_i | z_<i) in raster order.

Two causal streams as in PixelCNN++ (one sees the rows above, one the rows above and the codes to
the left, so there is no blind spot), gated residual blocks, and causal self-attention over every
earlier position. The logits at position i depend on the codes before i only — never on code i or
later ones — so one forward pass gives every position's conditional distribution at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgead.errors import ConfigError


def down_shift(x: torch.Tensor) -> torch.Tensor:
    """Move every row one down (zeros on top): row i then sees rows < i only."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1, :]


def right_shift(x: torch.Tensor) -> torch.Tensor:
    """Move every column one right (zeros on the left)."""
    return F.pad(x, (1, 0, 0, 0))[:, :, :, :-1]


class DownConv(nn.Module):
    """Convolution over the rows above and the current row, centred horizontally: (kh, kw) with kw odd."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int]) -> None:
        super().__init__()
        self.kernel = kernel
        self.conv = nn.Conv2d(cin, cout, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.kernel
        return self.conv(F.pad(x, ((kw - 1) // 2, (kw - 1) // 2, kh - 1, 0)))


class DownRightConv(nn.Module):
    """Convolution over the rows above and the current row, the current column and those to its left."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int]) -> None:
        super().__init__()
        self.kernel = kernel
        self.conv = nn.Conv2d(cin, cout, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.kernel
        return self.conv(F.pad(x, (kw - 1, 0, kh - 1, 0)))


class GatedResidual(nn.Module):
    """x + a * sigmoid(b), [a, b] = conv(dropout(elu(conv(elu(x)) + skip(elu(aux))))) with causal convolutions."""

    def __init__(self, channels: int, conv: type, kernel: tuple[int, int], aux: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv_in = conv(channels, channels, kernel)
        self.skip = nn.Conv2d(aux, channels, 1) if aux else None
        self.dropout = nn.Dropout(dropout)
        self.conv_out = conv(channels, 2 * channels, kernel)

    def forward(self, x: torch.Tensor, aux: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv_in(F.elu(x))
        if self.skip is not None:
            h = h + self.skip(F.elu(aux))
        a, b = self.conv_out(self.dropout(F.elu(h))).chunk(2, dim=1)
        return x + a * torch.sigmoid(b)


class CausalAttention(nn.Module):
    """Each position attends to the strictly earlier positions (raster order); keys also see the code embeddings."""

    def __init__(self, channels: int, key_channels: int, positions: int) -> None:
        super().__init__()
        self.query = nn.Conv2d(channels, key_channels, 1)
        self.key = nn.Conv2d(2 * channels, key_channels, 1)
        self.value = nn.Conv2d(2 * channels, channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        self.scale = key_channels**-0.5
        # keys include the code at their own position, so a query may not see its own position: strictly lower triangle
        allowed = torch.tril(torch.ones(positions, positions, dtype=torch.bool), diagonal=-1)
        self.register_buffer("blocked", ~allowed, persistent=False)
        self.register_buffer("has_past", allowed.any(1).view(1, positions, 1), persistent=False)

    def forward(self, x: torch.Tensor, embedded: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        context = torch.cat([x, embedded], dim=1)
        q = self.query(x).flatten(2).transpose(1, 2)  # (N, P, k)
        k = self.key(context).flatten(2)  # (N, k, P)
        v = self.value(context).flatten(2).transpose(1, 2)  # (N, P, C)
        scores = (q @ k) * self.scale
        scores = scores.masked_fill(self.blocked, -1e9)
        attended = torch.softmax(scores, dim=-1) * self.has_past  # position 0 has no past: nothing to attend
        out = (attended @ v).transpose(1, 2).reshape(n, c, h, w)
        return x + self.out(out)


class PixelSnailPrior(nn.Module):
    """Codes (N, h, w) int64 -> logits (N, K, h, w), each position conditioned on the earlier codes only."""

    def __init__(self, codes: int, grid: tuple[int, int], channels: int = 48, blocks: int = 2, res_per_block: int = 1,
                 key_channels: int = 16, dropout: float = 0.1) -> None:
        super().__init__()
        self.codes, self.grid = codes, tuple(grid)
        h, w = self.grid
        self.embed = nn.Embedding(codes, channels)
        ys = torch.linspace(-0.5, 0.5, h).view(1, 1, h, 1).expand(1, 1, h, w)
        xs = torch.linspace(-0.5, 0.5, w).view(1, 1, 1, w).expand(1, 1, h, w)
        self.register_buffer("background", torch.cat([ys, xs], dim=1).contiguous(), persistent=False)
        cin = channels + 2
        self.u_init = DownConv(cin, channels, (2, 3))
        self.ul_up = DownConv(cin, channels, (1, 3))
        self.ul_left = DownRightConv(cin, channels, (2, 1))
        self.u_blocks = nn.ModuleList()
        self.ul_blocks = nn.ModuleList()
        self.attention = nn.ModuleList()
        for _ in range(blocks):
            self.u_blocks.append(nn.ModuleList(GatedResidual(channels, DownConv, (2, 3), dropout=dropout) for _ in range(res_per_block)))
            self.ul_blocks.append(nn.ModuleList(GatedResidual(channels, DownRightConv, (2, 2), aux=channels, dropout=dropout) for _ in range(res_per_block)))
            self.attention.append(CausalAttention(channels, key_channels, h * w))
        self.out = nn.Conv2d(channels, codes, 1)

    def check_grid(self, codes: torch.Tensor) -> None:
        if tuple(codes.shape[-2:]) != self.grid:
            raise ConfigError(f"code grid {tuple(codes.shape[-2:])} is not the {self.grid} grid this prior was trained on")

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export():
            self.check_grid(codes)
        embedded = self.embed(codes).permute(0, 3, 1, 2)
        x = torch.cat([embedded, self.background.expand(codes.shape[0], -1, -1, -1)], dim=1)
        u = down_shift(self.u_init(x))
        ul = down_shift(self.ul_up(x)) + right_shift(self.ul_left(x))
        for u_block, ul_block, attention in zip(self.u_blocks, self.ul_blocks, self.attention):
            for u_res, ul_res in zip(u_block, ul_block):
                u = u_res(u)
                ul = ul_res(ul, u)
            ul = attention(ul, embedded)
        return self.out(F.elu(ul))


class PriorGraph(nn.Module):
    """The exported `prior` graph: codes (N, h, w) int64 -> log-probabilities (N, h, w, K) float32 of every code at every position."""

    def __init__(self, prior: PixelSnailPrior) -> None:
        super().__init__()
        self.prior = prior

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.prior(codes), dim=1).permute(0, 2, 3, 1)
