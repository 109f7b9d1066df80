"""Pictures for people, with one colour scale everywhere (overlays, live frames, the HTML report).

The scale is tied to the threshold: pixels of a typical good image stay uncoloured, rising scores go
blue, cyan, green and yellow, and only a pixel at or above the image threshold is red. So a red
region always means "above the threshold"; with the default image score (the map's maximum) an
image is NG exactly when some pixel is red. The OK/NG banner sits above the image and a colour bar
below it, so neither hides a pixel.
"""

from __future__ import annotations

import cv2
import numpy as np

TOP_LEVEL = 1.5  # the scale runs from `low` (0) to 1.5x the threshold's distance from it; beyond is clipped
# (level, RGB) anchors; the step from yellow to red is the threshold itself
_BELOW = ((0.0, (20, 30, 140)), (0.35, (0, 120, 255)), (0.6, (0, 200, 200)), (0.8, (60, 200, 40)), (0.999, (250, 225, 0)))
_ABOVE = ((1.0, (235, 25, 25)), (TOP_LEVEL, (150, 0, 110)))
OK_RGB, NG_RGB = (30, 150, 60), (200, 30, 30)


def normalise_map(anomaly_map: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map values to levels: `low` (a typical good pixel) -> 0, `high` (the threshold) -> 1, clipped to [0, 1.5]."""
    span = max(high - low, 1e-12)
    return np.clip((anomaly_map - low) / span, 0.0, TOP_LEVEL)


def _lut() -> np.ndarray:
    """(256, 3) uint8 RGB: entry i is the colour of level i / 255 * TOP_LEVEL."""
    levels = np.arange(256) / 255.0 * TOP_LEVEL
    lut = np.empty((256, 3), np.float64)
    for anchors, chosen in ((_BELOW, levels < 1.0), (_ABOVE, levels >= 1.0)):
        xs = [a[0] for a in anchors]
        for c in range(3):
            lut[chosen, c] = np.interp(levels[chosen], xs, [a[1][c] for a in anchors])
    return lut.round().astype(np.uint8)


LUT = _lut()
THRESHOLD_INDEX = int(np.ceil(255 / TOP_LEVEL))  # first LUT entry at or above the threshold


def colourise(levels: np.ndarray) -> np.ndarray:
    """Levels (H, W) from normalise_map -> (H, W, 3) uint8 RGB of the shared scale; level 1 and above are red."""
    index = np.clip(np.ceil(levels / TOP_LEVEL * 255 - 1e-9), 0, 255).astype(np.int64)
    index = np.where(levels >= 1.0, np.maximum(index, THRESHOLD_INDEX), np.minimum(index, THRESHOLD_INDEX - 1))
    return LUT[index]


def heatmap_overlay(image: np.ndarray, anomaly_map: np.ndarray, low: float, high: float, alpha: float = 0.6) -> np.ndarray:
    """(H, W, 3) uint8 RGB image and (h, w) map -> (H, W, 3) uint8 RGB with the shared scale blended on.

    Typical good pixels stay almost as they are; colour grows with the level, and pixels above the
    threshold are covered most (0.7) so that they read as red whatever the image underneath.
    """
    height, width = image.shape[:2]
    if anomaly_map.shape != (height, width):
        anomaly_map = cv2.resize(anomaly_map.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    levels = normalise_map(anomaly_map, low, high)
    weight = np.where(levels >= 1.0, 0.7, alpha * np.minimum(levels, 1.0) ** 2)[:, :, None]
    blended = image.astype(np.float32) * (1 - weight) + colourise(levels).astype(np.float32) * weight
    return blended.round().astype(np.uint8)


def outline_mask(image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int] = (0, 255, 0)) -> np.ndarray:
    """Draw the contour of a boolean mask (H, W) on a copy of an RGB image."""
    out = image.copy()
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, colour, 1)
    return out


def _text(canvas: np.ndarray, text: str, origin: tuple[int, int], height_px: int, colour=(255, 255, 255)) -> None:
    scale = max(height_px, 6) / 22.0
    cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)


def banner(image: np.ndarray, text: str, anomalous: bool) -> np.ndarray:
    """The image with a red (NG) or green (OK) caption bar added above it: (H + bar, W, 3); no pixel is hidden."""
    bar_px = max(16, image.shape[0] // 14)
    bar = np.empty((bar_px, image.shape[1], 3), np.uint8)
    bar[:] = NG_RGB if anomalous else OK_RGB
    _text(bar, text, (4, int(bar_px * 0.72)), int(bar_px * 0.6))
    return np.concatenate([bar, image])


def colour_bar(width: int, low: float, high: float, height_px: int | None = None) -> np.ndarray:
    """(h, width, 3) RGB strip of the shared scale, with the typical good value and the threshold marked."""
    height_px = height_px or max(18, width // 16)
    strip_px = max(4, height_px // 3)
    out = np.full((height_px, width, 3), 255, np.uint8)
    levels = np.linspace(0, TOP_LEVEL, width)
    out[:strip_px] = colourise(levels)[None]
    at = int(round(width / TOP_LEVEL))
    out[: strip_px + 3, max(at - 1, 0) : at + 1] = 0  # the threshold tick
    text_px = height_px - strip_px - 3
    _text(out, f"{low:.3g} good", (2, height_px - 3), text_px, (0, 0, 0))
    label = f"threshold {high:.4g}: red = above"
    label_w = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, max(text_px, 6) / 22.0, 1)[0][0]
    _text(out, label, (max(0, min(at - label_w // 2, width - label_w - 2)), height_px - 3), text_px, (0, 0, 0))
    return out


def framed(image: np.ndarray, text: str, anomalous: bool, low: float, high: float) -> np.ndarray:
    """An annotated image for people: OK/NG banner above, the image, the colour bar below."""
    return np.concatenate([banner(image, text, anomalous), colour_bar(image.shape[1], low, high)])


def verdict_text(score: float, threshold: float, anomalous: bool) -> str:
    """'NG 38.31 > 35.88' or 'OK 32.60 <= 35.88': the verdict with the comparison that made it."""
    return f"NG {score:.4g} > {threshold:.4g}" if anomalous else f"OK {score:.4g} <= {threshold:.4g}"
