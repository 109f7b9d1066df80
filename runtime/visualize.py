"""Heatmap overlays for people: the map coloured from 'typical good' to 'at the threshold'."""

from __future__ import annotations

import cv2
import numpy as np


def normalise_map(anomaly_map: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map values to [0, 1]: `low` (a typical good pixel) -> 0, `high` (the threshold) -> 1, clipped."""
    span = max(high - low, 1e-12)
    return np.clip((anomaly_map - low) / span, 0.0, 1.0)


def heatmap_overlay(image: np.ndarray, anomaly_map: np.ndarray, low: float, high: float, alpha: float = 0.45) -> np.ndarray:
    """(H, W, 3) uint8 RGB image and (h, w) map -> (H, W, 3) uint8 RGB with a JET heatmap blended on."""
    height, width = image.shape[:2]
    if anomaly_map.shape != (height, width):
        anomaly_map = cv2.resize(anomaly_map.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    level = (normalise_map(anomaly_map, low, high) * 255).astype(np.uint8)
    colour = cv2.cvtColor(cv2.applyColorMap(level, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    weight = (alpha * (level.astype(np.float32) / 255.0) ** 0.5)[:, :, None]  # good areas stay readable
    blended = image.astype(np.float32) * (1 - weight) + colour.astype(np.float32) * weight
    return blended.round().astype(np.uint8)


def outline_mask(image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int] = (0, 255, 0)) -> np.ndarray:
    """Draw the contour of a boolean mask (H, W) on a copy of an RGB image."""
    out = image.copy()
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, colour, 1)
    return out


def banner(image: np.ndarray, text: str, anomalous: bool) -> np.ndarray:
    """A copy of an RGB image with a red (NG) or green (OK) caption bar on top."""
    out = image.copy()
    bar = max(14, image.shape[0] // 16)
    out[:bar] = (200, 30, 30) if anomalous else (30, 150, 60)
    scale = bar / 30.0
    cv2.putText(out, text, (4, int(bar * 0.75)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out
