"""The deployed scoring path: backend features, memory bank, maps and threshold from the manifest."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgead.artifact import Artifact
from edgead.errors import ArtifactError
from edgead.runtime.backends.base import Backend, open_backend
from edgead.runtime.memory_bank import MemoryBank
from edgead.runtime.postprocess import anomaly_maps, image_scores, patch_scores
from edgead.runtime.preprocess import stack_batch


@dataclass
class Prediction:
    """Score of one image, its verdict, and its map (H, W) float32 at the model input size."""

    score: float
    anomalous: bool
    anomaly_map: np.ndarray


class Predictor:
    """Scores RGB images with an artifact's engine and memory bank; a context manager."""

    def __init__(
        self, artifact: Artifact, backend: str | Backend | None = None, device: str = "cpu", precision: str | None = None
    ) -> None:
        """`backend`: a name (or None for the ladder), or an opened Backend to use as it is."""
        manifest = artifact.manifest
        self.artifact = artifact
        self.size_px = tuple(manifest["input"]["size_px"])
        bank = artifact.load_npy(manifest["memory_bank"]["member"])
        expected = (manifest["memory_bank"]["count"], manifest["memory_bank"]["dim"])
        if bank.shape != expected:
            raise ArtifactError(f"{artifact.path}: memory bank has shape {bank.shape}, the manifest says {expected}")
        self.bank = MemoryBank(bank, k=manifest["memory_bank"]["k"])
        self.blur_sigma_px = float(manifest["postprocess"]["blur_sigma_px"])
        self.threshold = float(manifest["postprocess"]["image_threshold"])
        self.backend: Backend = backend if isinstance(backend, Backend) else open_backend(artifact, backend, device, precision)

    # the deployed path in stages, so that a live loop can time each one
    def prepare(self, images: list[np.ndarray]) -> np.ndarray:
        """RGB images of any size -> one (N, h, w, 3) uint8 batch at the model input size."""
        return stack_batch(images, self.size_px)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """(N, h, w, 3) uint8 -> patch features (N, C, h/8, w/8) from the engine."""
        return self.backend.infer(batch)

    def knn(self, features: np.ndarray) -> np.ndarray:
        """Patch features -> kNN patch scores (N, h/8, w/8)."""
        return patch_scores(features, self.bank)

    def maps(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Patch scores -> image scores (N,) and smoothed anomaly maps (N, H, W) at the input size."""
        maps = anomaly_maps(scores, self.size_px, self.blur_sigma_px)
        return image_scores(maps), maps

    def features(self, images: list[np.ndarray]) -> np.ndarray:
        """Patch features (N, C, h, w) of RGB images of any size."""
        return self.infer(self.prepare(images))

    def predict(self, images: list[np.ndarray]) -> list[Prediction]:
        """Score a batch of (H, W, 3) uint8 RGB images."""
        if not images:
            return []
        scores, maps = self.maps(self.knn(self.features(images)))
        return [Prediction(float(s), bool(s > self.threshold), m) for s, m in zip(scores, maps)]

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
