"""CutPaste-style synthetic defects (Li et al., CVPR 2021): a piece of the image itself, cut, jittered, rotated, pasted elsewhere.

The patch-wise auto-encoder trains on good images with such pieces pasted in, so that its features
learn to describe what does not belong as well as what does (2308.00429, section 2.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edgead.config import CUTPASTE_SHAPES as SHAPES
from edgead.errors import ConfigError

_REFERENCE_PX = 256  # CutPaste's scar sizes are given for 256 px images
_SCAR_WIDTH_PX = (2, 16)
_SCAR_LENGTH_PX = (10, 25)
_ASPECT = (0.3, 1 / 0.3)
_JITTER = 0.1  # brightness, contrast and saturation, each scaled by a factor in [1 - j, 1 + j]


@dataclass(frozen=True)
class CutPaste:
    """A defect with `probability` per image; a rectangle covers between 2/15 of `max_area` and `max_area` of the image.

    Scars are 2-16 px wide and 10-25 px long at 256 px (CutPaste-scar), scaled with the image, rotated by up to 45°;
    rectangles are rotated by up to 45° too. "mixed" picks either with equal odds.
    """

    probability: float = 0.5
    shape: str = "mixed"
    max_area: float = 0.15

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ConfigError(f"CutPaste shape {self.shape!r}: choose one of {', '.join(SHAPES)}")

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 -> the image with a pasted piece, and the mask (H, W) bool of pixels it replaced.

        Pixels outside the mask are the input's own; with probability 1 - `probability` nothing is pasted.
        """
        height, width = image.shape[:2]
        if rng.random() >= self.probability:
            return image.copy(), np.zeros((height, width), dtype=bool)
        shape = self.shape if self.shape != "mixed" else ("rectangle", "scar")[int(rng.integers(2))]
        scale = min(height, width) / _REFERENCE_PX
        if shape == "scar":
            h = rng.uniform(*_SCAR_LENGTH_PX) * scale
            w = rng.uniform(*_SCAR_WIDTH_PX) * scale
        else:
            area = rng.uniform(self.max_area * 2 / 15, self.max_area) * height * width
            aspect = np.exp(rng.uniform(np.log(_ASPECT[0]), np.log(_ASPECT[1])))
            h, w = np.sqrt(area * aspect), np.sqrt(area / aspect)
        h = int(np.clip(round(h), 1, height))
        w = int(np.clip(round(w), 1, width))
        angle = rng.uniform(-45, 45)
        return paste(image, rng, h, w, angle)


def paste(image: np.ndarray, rng: np.random.Generator, h: int, w: int, angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Cut an h x w piece at a random place, jitter its colours, rotate it by `angle_deg` and paste it at another random place."""
    height, width = image.shape[:2]
    top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
    centre_y, centre_x = rng.uniform(h / 2, height - h / 2), rng.uniform(w / 2, width - w / 2)
    source = np.zeros((height, width), dtype=np.uint8)
    source[top : top + h, left : left + w] = 1
    # rotation about the piece's centre, then a shift onto the destination centre
    transform = cv2.getRotationMatrix2D((left + (w - 1) / 2, top + (h - 1) / 2), angle_deg, 1.0)
    transform[:, 2] += (centre_x - (left + (w - 1) / 2), centre_y - (top + (h - 1) / 2))
    mask = cv2.warpAffine(source, transform, (width, height), flags=cv2.INTER_NEAREST, borderValue=0).astype(bool)
    piece = cv2.warpAffine(jitter(image, rng), transform, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    out = image.copy()
    out[mask] = piece[mask]
    return out, mask


def jitter(image: np.ndarray, rng: np.random.Generator, strength: float = _JITTER) -> np.ndarray:
    """Brightness, contrast and saturation each scaled by a random factor in [1 - strength, 1 + strength]; (H, W, 3) uint8."""
    x = image.astype(np.float32)
    brightness, contrast, saturation = rng.uniform(1 - strength, 1 + strength, size=3)
    x = x * brightness
    x = (x - x.mean()) * contrast + x.mean()
    grey = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    x = (x - grey[..., None]) * saturation + grey[..., None]
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)
