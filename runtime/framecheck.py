"""Frames unlike the training images: a size or aspect far from theirs is scored, but the user is warned once.

A whole-frame model resizes every frame to its input: a frame of another aspect is stretched, one of
another size shows the surface at another scale, and the score of either is not comparable with the
calibration. (Tiled models cut frames at their own pixel scale, so only the aspect of a tile matters
there, and it is fixed.)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

ASPECT_TOLERANCE = 1.25  # a frame may be this much wider or narrower than the training images
SCALE_TOLERANCE = 2.0  # and this much larger or smaller (side of the equivalent square)


@dataclass(frozen=True)
class ImageGeometry:
    """Sizes of the images a model was trained on: count, height and width ranges and aspect (W/H) range."""

    images: int
    height_px: tuple[int, int]
    width_px: tuple[int, int]
    aspect: tuple[float, float]

    @classmethod
    def of(cls, shapes: Iterable[Sequence[int]]) -> ImageGeometry:
        """From (H, W, ...) shapes."""
        hw = np.array([(int(s[0]), int(s[1])) for s in shapes], dtype=np.int64)
        aspect = hw[:, 1] / hw[:, 0]
        return cls(len(hw), (int(hw[:, 0].min()), int(hw[:, 0].max())), (int(hw[:, 1].min()), int(hw[:, 1].max())),
                   (round(float(aspect.min()), 4), round(float(aspect.max()), 4)))

    def to_manifest(self) -> dict:
        return {"images": self.images, "height_px": list(self.height_px), "width_px": list(self.width_px), "aspect": list(self.aspect)}

    @classmethod
    def from_manifest(cls, section: dict | None) -> ImageGeometry | None:
        if not section:
            return None
        return cls(int(section["images"]), tuple(section["height_px"]), tuple(section["width_px"]), tuple(section["aspect"]))

    def problem(self, frame_hw: tuple[int, int]) -> str | None:
        """Why a frame of (H, W) is far from the training images, or None."""
        height, width = frame_hw
        trained = (f"{self.height_px[0]}x{self.width_px[0]} px" if self.height_px[0] == self.height_px[1] and self.width_px[0] == self.width_px[1]
                   else f"{self.height_px[0]}-{self.height_px[1]} x {self.width_px[0]}-{self.width_px[1]} px")
        aspect = width / max(height, 1)
        if aspect < self.aspect[0] / ASPECT_TOLERANCE or aspect > self.aspect[1] * ASPECT_TOLERANCE:
            return f"a frame of {height}x{width} px (HxW) has an aspect of {aspect:.2f}, the training images ({trained}) {_span(self.aspect)}: it is stretched to the model input"
        side = math.sqrt(height * width)
        low = math.sqrt(self.height_px[0] * self.width_px[0])
        high = math.sqrt(self.height_px[1] * self.width_px[1])
        if side < low / SCALE_TOLERANCE or side > high * SCALE_TOLERANCE:
            factor = low / side if side < low else side / high
            return (f"a frame of {height}x{width} px (HxW) is {factor:.1f}x {'smaller' if side < low else 'larger'} than the "
                    f"training images ({trained}): the surface appears at another scale once resized to the model input")
        return None


def _span(pair: Sequence[float]) -> str:
    return f"{pair[0]:.2f}" if pair[0] == pair[1] else f"{pair[0]:.2f}-{pair[1]:.2f}"


class FrameCheck:
    """Warns once (per Predictor, i.e. per run) about the first frame far from the training images."""

    def __init__(self, geometry: ImageGeometry | None, tiled: bool) -> None:
        self.geometry = None if tiled else geometry
        self.warned = False

    def check(self, images: Iterable[np.ndarray]) -> None:
        if self.warned or self.geometry is None:
            return
        for image in images:
            problem = self.geometry.problem(image.shape[:2])
            if problem:
                self.warned = True
                log.warning(
                    "%s; its score is not comparable with the calibration. Capture frames from the camera that will run "
                    "(`edgead capture`) and train or enroll on them, or crop frames like the training images "
                    "(this warning shows once per run)", problem,
                )
                return
