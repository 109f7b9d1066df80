"""A memory bank from streamed patch features: each batch goes to the coreset sampler as it is extracted.

Any detector that keeps a coreset of its training features (PatchCore, the patch-wise auto-encoder)
feeds its own feature batches here; memory stays at one sampler chunk plus the bank, whatever the
number of images, tiles or frames.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from edgead.errors import DataError
from edgead.runtime.coreset import CHUNK_ROWS, EXACT_ROWS, StreamingCoreset


@dataclass(frozen=True)
class FittedBank:
    """Bank rows (M, C) float32, coverage radius, patch features seen, feature grid (h, w), seconds spent subsampling.

    `copies_seen` / `copies_kept`: of those, the nuisance copies' features that went through a coreset of their own share,
    and the rows it kept (0 when the copies, if any, shared the model's coreset rule).
    """

    features: np.ndarray
    radius: float
    seen: int
    grid: tuple[int, int]
    coreset_s: float
    copies_seen: int = 0
    copies_kept: int = 0


def fit_bank(
    feature_batches: Iterable[tuple[int, np.ndarray]],
    n_images: int,
    coreset_fraction: float | None,
    coreset_count: int | None,
    projection_dim: int = 64,
    seed: int = 0,
    device: str = "cpu",
    chunk_rows: int = CHUNK_ROWS,
    exact_rows: int = EXACT_ROWS,
) -> FittedBank:
    """Subsample streamed (images in the batch, patch features (n, C, h, w)) of `n_images` images into a coreset bank.

    A count target is turned into a fraction with the first batch's features per image (images of
    one size give exactly the count; the bank never exceeds it).
    """
    sampler = None
    spent = 0.0
    grid = (0, 0)
    for images, features in feature_batches:
        n, channels, h, w = features.shape
        rows = features.transpose(0, 2, 3, 1).reshape(-1, channels)
        started = time.perf_counter()
        if sampler is None:
            grid = (h, w)
            fraction = coreset_fraction
            if fraction is None:
                fraction = min(1.0, coreset_count / max(1, rows.shape[0] * n_images // max(1, images)))
            sampler = StreamingCoreset(
                fraction, channels, projection_dim, seed, chunk_rows, device, max_count=coreset_count, exact_rows=exact_rows
            )
        sampler.add(rows)
        spent += time.perf_counter() - started
    if sampler is None:
        raise DataError("no features to build a memory bank from: the image list was empty")
    started = time.perf_counter()
    bank = sampler.finish()
    spent += time.perf_counter() - started
    return FittedBank(bank.features, bank.radius, bank.seen, grid, spent)
