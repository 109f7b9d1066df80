"""The interface every scoring head implements."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from edgead.artifact import Artifact


class Head:
    """Turns the main graph's outputs for a batch into anomaly score grids (N, gh, gw) float32.

    `section` is the manifest's `head` entry; a head reads its own manifest sections (a memory bank,
    SVM support vectors, a codebook) and checks them with `require_keys`. `backends` holds the opened
    engines of the model's other graphs, by graph name, for heads that orchestrate several graphs;
    `options` the run-time options given (names from OPTIONS, values not None).
    The Predictor turns the grids into maps: resized to the engine input, smoothed, stitched.
    """

    name = "base"
    # run-time options this head takes (`eval --restoration exact` ...); open_head refuses any other
    OPTIONS: tuple[str, ...] = ()

    def __init__(
        self, artifact: Artifact, section: dict[str, Any], device: str, backends: Mapping[str, Any], options: Mapping[str, Any] | None = None
    ) -> None:
        self.artifact = artifact
        self.section = section
        self.device = device
        self.backends = dict(backends)
        self.options = dict(options or {})

    def score(self, outputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Main-graph outputs by name, each (N, ...) -> score grids (N, gh, gw) float32."""
        raise NotImplementedError

    def describe(self) -> str:
        return self.name

    def close(self) -> None:
        """Release what the head holds (GPU arrays); the backends are closed by their owner. Idempotent."""
