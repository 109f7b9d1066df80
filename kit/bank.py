"""A memory bank from patch features: the coreset of every feature a detector's model extracts from good images.

Any detector that keeps a coreset of its training features (PatchCore, the patch-wise auto-encoder)
feeds its own feature batches here.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from edgead.errors import DataError
from edgead.progress import Progress, silent_progress
from edgead.runtime.coreset import greedy_coreset
from edgead.runtime.enroll import coreset_target


@dataclass(frozen=True)
class FittedBank:
    """Bank rows (M, C) float32, coverage radius, patch features seen, feature grid (h, w), seconds spent subsampling."""

    features: np.ndarray
    radius: float
    seen: int
    grid: tuple[int, int]
    coreset_s: float


def fit_bank(
    feature_batches: Iterable[tuple[int, np.ndarray]],
    n_images: int,
    coreset_fraction: float | None,
    coreset_count: int | None,
    projection_dim: int = 64,
    seed: int = 0,
    progress: Progress = silent_progress,
) -> FittedBank:
    """Subsample (images in the batch, patch features (n, C, h, w)) of `n_images` images into a coreset bank."""
    rows, grid = [], (0, 0)
    for _, features in feature_batches:
        n, channels, h, w = features.shape
        grid = (h, w)
        rows.append(features.transpose(0, 2, 3, 1).reshape(-1, channels))
    if not rows:
        raise DataError("no features to build a memory bank from: the image list was empty")
    flat = np.concatenate(rows)
    started = time.perf_counter()
    target = coreset_target({"fraction": coreset_fraction, "count": coreset_count}, flat.shape[0])
    with progress("coreset", target) as advance:
        coreset = greedy_coreset(flat, target, projection_dim, seed, advance)
    return FittedBank(flat[coreset.indices], coreset.radius, int(flat.shape[0]), grid, time.perf_counter() - started)
