"""Feature latents of the restoration detector (`--latents features`): frozen CNN patch features quantised by a k-means codebook.

The pixel VQ-VAE's codes (kit/vqvae.py) describe the photo they were trained on so closely that the prior
finds good crops from an unseen part of the surface almost as unlikely as defects (README, "VQ-VAE
restoration"). Here the codes index the frozen ImageNet patch features PatchCore uses (kit/features.py:
EfficientNet-Lite0, stride 8, 3x3 neighbourhood average), average-pooled to the code grid (`downsample`
input pixels per code: 8 or 16), and assigned to the nearest of `codebook_size` k-means centres fitted on
the good images' features. Nothing is trained but the codebook and the prior. The features are not
L2-normalised: their length carries colour and contrast (seed-1 demo tissue, restoration map: image AUROC
0.36-0.42 normalised, 0.70-0.77 not; README, "VQ-VAE restoration").

The exported `encoder` graph gives the codes and each feature's distance to every codeword; a feature
restored to another code (runtime/restoration.py) is scored by its distance to that code's centre — the
decoding of a code is its centre, so no pixel decoder is needed and none is exported.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgead.kit.features import PatchFeatureModel

FEATURE_STRIDE_PX = 8
KMEANS_SAMPLES = 40000  # features the codebook is fitted on at most (a random sample of all)
KMEANS_ITERATIONS = 25


class FeatureQuantizer(nn.Module):
    """uint8 RGB images (N, H, W, 3) -> codes (N, h, w) int64 and distances to every codeword (N, h, w, K) float32."""

    def __init__(self, features: PatchFeatureModel, codebook_size: int, pool: int) -> None:
        super().__init__()
        self.features, self.pool = features, pool
        self.register_buffer("codebook", torch.zeros(codebook_size, features.out_channels))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> (N, C, h, w) features on the code grid."""
        f = self.features(images)
        return F.avg_pool2d(f, self.pool) if self.pool > 1 else f

    def distances(self, features: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) -> (N, h, w, K) Euclidean distances to the codewords."""
        flat = features.permute(0, 2, 3, 1)
        squared = (flat * flat).sum(-1, keepdim=True) - 2 * flat @ self.codebook.t() + (self.codebook * self.codebook).sum(1)
        return squared.clamp_min(0.0).sqrt()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        distances = self.distances(self.embed(images))
        return distances.argmin(-1), distances

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> (N, h, w) int64 codes."""
        return self.forward(images)[0]


class FeatureEncoderGraph(nn.Module):
    """The exported `encoder` graph of feature latents: images -> (codes, distances)."""

    def __init__(self, quantizer: FeatureQuantizer) -> None:
        super().__init__()
        self.quantizer = quantizer

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.quantizer(images)


def kmeans(points: np.ndarray, k: int, seed: int, iterations: int = KMEANS_ITERATIONS) -> np.ndarray:
    """(M, D) float32 -> (k, D) centres: k-means++ seeding, then Lloyd iterations; an empty cluster takes a random point."""
    if len(points) < k:
        from edgead.errors import ConfigError

        raise ConfigError(f"--codebook-size {k} is more than the {len(points)} training features: give a smaller codebook or more images")
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32))
    chosen = [int(rng.integers(len(x)))]
    nearest = ((x - x[chosen[0]]) ** 2).sum(1)
    for _ in range(1, k):
        p = nearest.double().numpy()
        chosen.append(int(rng.choice(len(x), p=p / p.sum())) if p.sum() > 0 else int(rng.integers(len(x))))
        nearest = torch.minimum(nearest, ((x - x[chosen[-1]]) ** 2).sum(1))
    centres = x[chosen].clone()
    for _ in range(iterations):
        assigned = torch.cdist(x, centres).argmin(1)
        counts = torch.bincount(assigned, minlength=k)
        sums = torch.zeros_like(centres).index_add_(0, assigned, x)
        empty = counts == 0
        centres = sums / counts.clamp_min(1)[:, None]
        if empty.any():
            centres[empty] = x[torch.from_numpy(rng.integers(0, len(x), int(empty.sum())))]
    return centres.numpy()


@torch.inference_mode()
def embed_all(quantizer: FeatureQuantizer, images: np.ndarray, batch: int = 8) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, C, h, w) float32 features on the code grid."""
    return np.concatenate([quantizer.embed(torch.from_numpy(images[s : s + batch])).numpy() for s in range(0, len(images), batch)])


def fit_codebook(quantizer: FeatureQuantizer, images: np.ndarray, seed: int) -> np.ndarray:
    """Fit the quantizer's codebook on the features of `images` (N, H, W, 3) uint8 (in place); their codes (N, h, w) int64."""
    features = embed_all(quantizer, images)
    flat = features.transpose(0, 2, 3, 1).reshape(-1, features.shape[1])
    rng = np.random.default_rng(seed)
    sample = flat[rng.choice(len(flat), min(len(flat), KMEANS_SAMPLES), replace=False)]
    quantizer.codebook.copy_(torch.from_numpy(kmeans(sample, quantizer.codebook.shape[0], seed)))
    with torch.inference_mode():
        return np.concatenate([quantizer.distances(torch.from_numpy(features[s : s + 256])).argmin(-1).numpy() for s in range(0, len(features), 256)])
