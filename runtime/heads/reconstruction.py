"""The reconstruction head (small patch auto-encoder): the error map the graph computed, as is (the manifest's error_map
says which: the paper's per-pixel squared error, or the low-pass error with its texture term)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from edgead.errors import BackendError
from edgead.runtime.heads.base import Head


class ReconstructionHead(Head):
    """Error maps (N, h, w) from the graph (the error between frame or patch and its reconstruction) -> score grids (N, h, w).

    The error is computed inside the exported graph, so that one channel per pixel comes back from the
    engine; the Predictor accumulates the patches' grids into the frame's map (overlaps averaged).
    """

    name = "reconstruction"

    def score(self, outputs: Mapping[str, np.ndarray]) -> np.ndarray:
        error = outputs[self.section.get("output", "error")]
        if error.ndim != 3:
            raise BackendError(f"the reconstruction head takes error maps (N, h, w), the engine returned {error.shape}")
        return error.astype(np.float32, copy=False)

    def describe(self) -> str:
        return "reconstruction (error map computed in the graph)"
