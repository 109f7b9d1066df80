"""k-fold cross-calibration: the image scores of good images, each from a model built without it.

Generic pieces, numpy only, shared by training (kit), export (a threshold per engine) and enroll (on
the device, without torch): which fold each image belongs to, and each image's engine outputs with
its frame layout. How a detector is refitted on the other folds is its head's business
(`Head.fold_scores`; the kNN head builds a bank from the other folds' features).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgead.progress import Progress, silent_progress


@dataclass
class ImageOutputs:
    """One good image as the engine saw it: its layout (tiles of one frame, or none) and the main graph's outputs (T, ...)."""

    layout: object  # a runtime.predictor.Batch without pixels (its `tiles` only)
    outputs: dict[str, np.ndarray]


def fold_ids(n_images: int, folds: int, seed: int) -> np.ndarray:
    """(n_images,) fold of each image: a seeded shuffle dealt round-robin, so folds differ in size by at most one."""
    order = np.random.default_rng(seed).permutation(n_images)
    ids = np.empty(n_images, dtype=np.int64)
    ids[order] = np.arange(n_images) % max(1, min(folds, n_images))
    return ids


def collect_outputs(predictor, images: Sequence[np.ndarray], progress: Progress = silent_progress, label: str = "features") -> list[ImageOutputs]:
    """Each image prepared and inferred by `predictor` (its engine, its tiling): the outputs the head would see."""
    from edgead.runtime.predictor import Batch

    collected = []
    with progress(label, len(images)) as advance:
        for image in images:
            batch = predictor.prepare([image])
            collected.append(ImageOutputs(Batch(np.empty(0, np.uint8), batch.tiles), predictor.infer(batch)))
            advance(1)
    return collected


def image_scorer(predictor, layouts: Sequence[object], map_medians: list[float] | None = None):
    """score(i, grid (T, gh, gw)) -> image i's score, through `predictor`'s maps (smoothing, stitching, quantile)."""

    def score(i: int, grid: np.ndarray) -> float:
        scores, maps = predictor.maps(grid, layouts[i])
        if map_medians is not None:
            map_medians.append(float(np.median(maps[0])))
        return float(scores[0])

    return score


def version_fold_scores(head, score, reference: Sequence[Sequence[dict[str, np.ndarray]]], folds: int, seed: int,
                        queries: Sequence[Sequence[dict[str, np.ndarray]]] | None = None, progress: Progress = silent_progress,
                        cache: dict | None = None, bank_versions: int | None = None, copy_share: float = 0.0) -> list[float]:
    """Cross-calibrated scores of good images and their nuisance copies: `reference[i]` holds image i's outputs, then its copies'.

    An image and its copies share a fold (a copy scored against a bank that holds its own image would score low), and a
    fold's model is refitted from the other folds' images and their first `bank_versions - 1` copies (None: all), as the
    deployed bank holds them; the other copies are calibration copies, scored only. `copy_share` > 0: the copies' features
    go through a coreset of that fraction of their own, as in the deployed bank (0: one coreset rule for all). Scores
    come version by version: every image, then every first copy, and so on. `queries` (same shape): the outputs scored
    against the fold models (an engine's own), where they differ from the reference's. `score(i, grid)` is image i's score.
    """
    used = len(reference[0]) if bank_versions is None else max(1, min(int(bank_versions), len(reference[0])))
    merge = 1 if copy_share > 0 else used  # with a share of their own, copies are subsampled apart from the images
    merged = [{name: np.concatenate([v[name] for v in versions[:merge]]) for name in versions[0]} for versions in reference]
    copies = None
    if copy_share > 0 and used > 1:
        copies = [{name: np.concatenate([v[name] for v in versions[1:used]]) for name in versions[0]} for versions in reference]
    cache = {} if cache is None else cache
    queries = reference if queries is None else queries
    extra = {} if copies is None else {"copies": copies, "copy_fraction": float(copy_share)}
    scores: list[float] = []
    for version in range(len(reference[0])):
        scored = [versions[version] for versions in queries]
        scores += list(head.fold_scores(merged, score, folds, seed, queries=scored, progress=progress, cache=cache, **extra))
    return scores
