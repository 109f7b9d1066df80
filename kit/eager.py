"""The training code's modules behind the runtime's interfaces: the reference for parity, and scoring at training time.

Calibration at training time scores good images through the runtime's own Predictor (prepare,
head, maps) with these eager backends in place of engines, so that a threshold is set on exactly
the numbers the deployed path will produce.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgead.artifact import Artifact
from edgead.progress import Progress, silent_progress
from edgead.runtime.backends.base import Backend
from edgead.runtime.images import read_image
from edgead.runtime.predictor import Predictor


class EagerBackend(Backend):
    """One graph's torch module, run on the CPU in FP32, behind the Backend interface."""

    name = "eager-torch"

    def __init__(self, artifact: Artifact, module: torch.nn.Module, device: str = "cpu") -> None:
        super().__init__(artifact, {"precision": "fp32"}, device)
        self.module = module.eval()

    def infer(self, inputs: np.ndarray) -> np.ndarray | tuple[np.ndarray, ...]:
        with torch.inference_mode():
            outputs = self.module(torch.from_numpy(np.ascontiguousarray(inputs)).to(self.device))
        if isinstance(outputs, (tuple, list)):
            return tuple(o.float().cpu().numpy() if o.is_floating_point() else o.cpu().numpy() for o in outputs)
        return outputs.float().cpu().numpy() if outputs.is_floating_point() else outputs.cpu().numpy()


def eager_backends(artifact: Artifact, graphs: Mapping[str, torch.nn.Module]) -> dict[str, Backend]:
    """An EagerBackend per graph name."""
    return {name: EagerBackend(artifact, module) for name, module in graphs.items()}


def score_good_images(
    manifest: dict[str, Any],
    members: dict[str, bytes],
    graphs: Mapping[str, torch.nn.Module],
    paths: Sequence[str | Path],
    progress: Progress = silent_progress,
    label: str = "calibrate",
    batch_size: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """Image scores (N,) and every map pixel (flattened) of `paths`, scored as deployed with the eager modules.

    `manifest` needs everything but the threshold; the Predictor is given an infinite one.
    """
    artifact = Artifact(Path("<training>"), manifest, members)
    scores, pixels = [], []
    with Predictor(artifact, eager_backends(artifact, graphs), threshold=float("inf")) as predictor:
        with progress(label, len(paths)) as advance:
            for start in range(0, len(paths), batch_size):
                images = [read_image(p) for p in paths[start : start + batch_size]]
                for prediction in predictor.predict(images):
                    scores.append(prediction.score)
                    pixels.append(prediction.anomaly_map.ravel())
                advance(len(images))
    return np.array(scores, dtype=np.float64), np.concatenate(pixels)
