"""Frame preparation before the engine: resize to the model input; the graph does the rest."""

from __future__ import annotations

import cv2
import numpy as np

from edgead.errors import DataError


def check_rgb(image: np.ndarray) -> np.ndarray:
    """`image` if it is (H, W, 3) uint8, else a DataError."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise DataError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    return image


def resize_to_input(image: np.ndarray, size_px: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (h, w, 3) uint8 at the model input size (area filter when shrinking)."""
    check_rgb(image)
    height, width = size_px
    if image.shape[:2] == (height, width):
        return image
    shrinking = image.shape[0] > height or image.shape[1] > width
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


def stack_batch(images: list[np.ndarray], size_px: tuple[int, int]) -> np.ndarray:
    """A list of RGB images -> one contiguous (N, h, w, 3) uint8 batch at the input size."""
    return np.ascontiguousarray(np.stack([resize_to_input(image, size_px) for image in images]))
