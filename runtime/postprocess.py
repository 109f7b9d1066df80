"""From patch scores to anomaly maps and image scores; calibration of the decision threshold."""

from __future__ import annotations

import math

import cv2
import numpy as np


UPSAMPLING = {"bilinear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}


def anomaly_maps(score_grids: np.ndarray, size_px: tuple[int, int], blur_sigma_px: float, upsample: str = "bilinear") -> np.ndarray:
    """(N, h, w) score grids of a head -> (N, H, W) float32 maps at the engine input size, upsampled then Gaussian.

    `upsample`: "bilinear" (the default, and what every model before the setting had) or "nearest"
    (each cell's score as a block, anomalib's choice).
    """
    height, width = size_px
    if score_grids.shape[1:] == (height, width) and blur_sigma_px <= 0:
        return score_grids.astype(np.float32)  # what resizing to the same size gives, without a call per grid
    if score_grids.shape[1:] == (1, 1):  # one score per tile (the support head): resized and smoothed, it stays that score
        return np.ascontiguousarray(np.broadcast_to(score_grids.astype(np.float32), (score_grids.shape[0], height, width)))
    maps = np.empty((score_grids.shape[0], height, width), dtype=np.float32)
    for i, scores in enumerate(score_grids):
        up = cv2.resize(scores.astype(np.float32), (width, height), interpolation=UPSAMPLING[upsample])
        maps[i] = smooth(up, blur_sigma_px)
    return maps


def smooth(anomaly_map: np.ndarray, blur_sigma_px: float) -> np.ndarray:
    """(H, W) float32 map -> Gaussian-smoothed (reflected borders, kernel of 4 sigma on each side); sigma 0 leaves it."""
    if blur_sigma_px <= 0:
        return anomaly_map
    ksize = 2 * math.ceil(4 * blur_sigma_px) + 1
    return cv2.GaussianBlur(anomaly_map, (ksize, ksize), blur_sigma_px, borderType=cv2.BORDER_REFLECT)


def image_scores(maps: np.ndarray | list[np.ndarray], quantile: float | None = None) -> np.ndarray:
    """Anomaly maps (N of (H, W)) -> (N,) image scores: each map's largest value, or its `quantile` (0-1).

    A high quantile (0.99) ignores a few hot pixels and suits large or diffuse defects; the maximum
    keeps the smallest defects.
    """
    if quantile is None:
        return np.array([float(m.max()) for m in maps], dtype=np.float32)
    return np.array([float(np.quantile(m, quantile)) for m in maps], dtype=np.float32)


def resize_map(anomaly_map: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """(H, W) map at the model input size -> the image's own resolution, float32."""
    height, width = image_hw
    if anomaly_map.shape == (height, width):
        return anomaly_map.astype(np.float32, copy=False)
    return cv2.resize(anomaly_map, (width, height), interpolation=cv2.INTER_LINEAR)
