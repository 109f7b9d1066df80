"""The interface every scoring head implements."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from edgead.artifact import Artifact
from edgead.errors import ConfigError
from edgead.progress import Progress, silent_progress


class Head:
    """Turns the main graph's outputs for a batch into anomaly score grids (N, gh, gw) float32.

    `section` is the manifest's `head` entry; a head reads its own manifest sections (a memory bank,
    SVM support vectors, a codebook) and checks them with `require_keys`. `backends` holds the opened
    engines of the model's other graphs, by graph name, for heads that orchestrate several graphs;
    `options` the run-time options given (names from OPTIONS, values not None).
    The Predictor turns the grids into maps: resized to the engine input, smoothed, stitched.
    """

    name = "base"
    # whether fold_scores can refit this head from engine outputs alone (k-fold cross-calibration at
    # training, per-engine thresholds at export, enroll); a learned head cannot without retraining
    refits_per_fold = False
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

    def fold_scores(
        self,
        reference: Sequence[Mapping[str, np.ndarray]],
        image_score: Callable[[int, np.ndarray], float],
        folds: int,
        seed: int,
        queries: Sequence[Mapping[str, np.ndarray]] | None = None,
        progress: Progress = silent_progress,
        cache: dict | None = None,
    ) -> np.ndarray:
        """(N,) scores of N good images, each by this head refitted without the image's fold (k-fold cross-calibration).

        reference: per image, the main graph's outputs the head is refitted from (the FP32 reference's,
        as at training); queries: per image, the outputs that are scored (an engine's own; default the
        reference). image_score(i, grids (T, gh, gw)) turns image i's grids into its score. A head that
        cannot be refitted from engine outputs (a learned one: refits_per_fold False) raises ConfigError;
        callers then fall back as `edgead.kit.eager.calibrate_good_images` and export describe.
        """
        raise ConfigError(f"the {self.name} head cannot be refitted from engine outputs: its threshold comes from training")

    def describe(self) -> str:
        return self.name

    def close(self) -> None:
        """Release what the head holds (GPU arrays); the backends are closed by their owner. Idempotent."""
