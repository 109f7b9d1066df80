"""Write a freshly trained detector as a .edgead with the engines this machine can build and their parity."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgead.artifact import write_artifact
from edgead.export.engines import export_formats
from edgead.kit.patchcore import TrainedPatchCore, to_artifact_parts
from edgead.runtime.images import read_image
from edgead.runtime.preprocess import stack_batch

# built at train time so that eval and predict run on the deployed path at once
TRAIN_TIME_FORMATS = (("onnx", "fp32"), ("torchscript", "fp32"))
PARITY_IMAGES = 8


def parity_batch(paths: Sequence[str | Path], size_px: tuple[int, int], limit: int = PARITY_IMAGES) -> np.ndarray:
    """Up to `limit` images as a (N, H, W, 3) uint8 batch at the model input size."""
    return stack_batch([read_image(p) for p in list(paths)[:limit]], size_px)


def write_trained(trained: TrainedPatchCore, out: Path, formats: Sequence[tuple[str, str]] = TRAIN_TIME_FORMATS) -> tuple[Path, dict[str, Any]]:
    """Manifest + weights + bank + engines (parity-checked on held-out good images), written atomically."""
    manifest, members = to_artifact_parts(trained)
    size = tuple(manifest["input"]["size_px"])
    images = parity_batch(trained.holdout_images or trained.bank_images, size)
    export_formats(manifest, members, trained.model, formats, images)
    return write_artifact(out, manifest, members), manifest
