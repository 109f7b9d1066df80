"""Write a freshly trained detector as a .edgead with the engines this machine can build and their parity."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgead.artifact import npy_bytes, write_artifact
from edgead.export.engines import FORMATS, ExportOptions, ModelSource, add_engine, in_memory
from edgead.export.parity import parity_report
from edgead.kit.patchcore import TrainedPatchCore, to_artifact_parts
from edgead.runtime.images import read_image
from edgead.runtime.preprocess import stack_batch

# built at train time so that eval and predict run on the deployed path at once
TRAIN_TIME_FORMATS = ("onnx", "torchscript")
PARITY_IMAGES = 8
PARITY_MEMBER = "parity_images.npy"


def parity_batch(paths: Sequence[str | Path], size_px: tuple[int, int], limit: int = PARITY_IMAGES) -> np.ndarray:
    """Up to `limit` images as a (N, H, W, 3) uint8 batch at the model input size."""
    return stack_batch([read_image(p) for p in list(paths)[:limit]], size_px)


def write_trained(trained: TrainedPatchCore, out: Path, formats: Sequence[str] = TRAIN_TIME_FORMATS) -> tuple[Path, dict[str, Any]]:
    """Manifest + weights + bank + FP32 engines (parity-checked on held-out good images), written atomically.

    The held-out images travel inside the artifact (parity_images.npy) so that engines built later,
    on another machine, are checked on the same images.
    """
    manifest, members = to_artifact_parts(trained)
    size = tuple(manifest["input"]["size_px"])
    images = parity_batch(trained.holdout_images or trained.bank_images, size)
    members[PARITY_MEMBER] = npy_bytes(images)
    manifest["parity_images"] = {"member": PARITY_MEMBER, "count": int(images.shape[0])}
    source = ModelSource(trained.model)
    for name in formats:
        entry = add_engine(manifest, members, FORMATS[name], source, ExportOptions("fp32"))
        entry["parity"] = parity_report(in_memory(manifest, members), trained.model, images, entry["backend"], "fp32")
    return write_artifact(out, manifest, members), manifest
