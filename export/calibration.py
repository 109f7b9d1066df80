"""Good images for INT8 calibration, loaded at the model input size."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edgead.errors import DataError
from edgead.runtime.images import find_images, read_image
from edgead.runtime.preprocess import resize_to_input

log = logging.getLogger(__name__)


def load_calibration_images(folder: str | Path, size_px: tuple[int, int], limit: int = 256) -> np.ndarray:
    """Up to `limit` readable images of `folder` (spread evenly over its sorted files) as (N, H, W, 3) uint8."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"calibration folder {folder} does not exist: pass --calib DIR with good images")
    paths = find_images(folder)
    if len(paths) > limit:
        paths = [paths[i] for i in np.linspace(0, len(paths) - 1, limit).round().astype(int)]
    images, unreadable = [], []
    for path in paths:
        try:
            images.append(resize_to_input(read_image(path), size_px))
        except DataError as exc:
            unreadable.append(path)
            log.warning("skipping calibration image: %s", exc)
    if not images:
        detail = f"{len(unreadable)} files could not be read" if unreadable else "it holds no png/jpg/bmp/tif image"
        raise DataError(f"no readable image in calibration folder {folder} ({detail}); INT8 calibration needs good images")
    return np.stack(images)
