"""Greedy k-center coreset over randomly projected features (PatchCore's subsampling)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from dataclasses import dataclass

import numpy as np

from edgead.errors import ConfigError
from edgead.runtime.memory_bank import MemoryBank


@dataclass(frozen=True)
class Coreset:
    """Indices into the input features, and the radius: every input feature lies within it of the coreset."""

    indices: np.ndarray
    radius: float


def greedy_coreset(
    features: np.ndarray,
    target: int,
    projection_dim: int = 64,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    measure_radius: bool = True,
) -> Coreset:
    """Pick `target` rows of `features` (N, C) by farthest-point sampling.

    Distances are computed in a random Gaussian projection to `projection_dim` channels
    (Johnson–Lindenstrauss) to make each step a cheap matrix-vector product; the reported
    radius is exact, measured in the original space (NaN with measure_radius=False, which saves a
    kNN pass over every feature). `progress(n)` is called with steps done.
    """
    features = np.ascontiguousarray(features, dtype=np.float32)
    n = features.shape[0]
    if features.ndim != 2 or n == 0:
        raise ConfigError(f"coreset needs a non-empty (N, C) feature array, got {features.shape}")
    if not 1 <= target <= n:
        raise ConfigError(f"coreset size {target} must be between 1 and the number of features {n}")
    rng = np.random.default_rng(seed)
    if features.shape[1] > projection_dim:
        projection = rng.standard_normal((features.shape[1], projection_dim), dtype=np.float32)
        projection /= np.sqrt(projection_dim)
        projected = features @ projection
    else:
        projected = features
    norms = np.einsum("ij,ij->i", projected, projected)
    selected = np.empty(target, dtype=np.int64)
    current = int(rng.integers(n))
    min_d2 = np.full(n, np.inf, dtype=np.float32)
    report_every = max(1, target // 100)
    for step in range(target):
        selected[step] = current
        center = projected[current]
        d2 = projected @ center
        d2 *= -2.0
        d2 += norms
        d2 += norms[current]
        np.minimum(min_d2, d2, out=min_d2)
        min_d2[current] = -1.0  # never pick a chosen row again, even when duplicates make d2 == 0
        current = int(np.argmax(min_d2))
        if progress is not None and (step + 1) % report_every == 0:
            progress(report_every)
    if progress is not None and target % report_every:
        progress(target % report_every)
    radius = coverage_radius(features, features[selected]) if measure_radius else float("nan")
    return Coreset(indices=selected, radius=radius)


def coreset_target(settings: dict[str, Any], n_features: int) -> int:
    """Bank size for `n_features` under a manifest's `memory_bank.coreset` (a fraction or a count)."""
    if settings.get("count") is not None:
        return min(int(settings["count"]), n_features)
    return max(1, min(n_features, round(float(settings["fraction"]) * n_features)))


def coverage_radius(features: np.ndarray, coreset: np.ndarray, chunk: int = 16384) -> float:
    """Largest distance from any row of `features` to its nearest row of `coreset` (fp32, exact)."""
    bank = MemoryBank(coreset, k=1, dtype=np.float32)  # fp32: the radius is exact, not fp16-rounded
    radius = 0.0
    for start in range(0, features.shape[0], chunk):
        radius = max(radius, float(bank.score(features[start : start + chunk]).max()))
    return radius
