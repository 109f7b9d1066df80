"""The kNN memory-bank head (PatchCore, patch-wise auto-encoder): distance of each patch feature to its nearest normal ones."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from edgead.artifact import Artifact, require_keys
from edgead.errors import ArtifactError, EdgeADError
from edgead.runtime.heads.base import Head
from edgead.runtime.memory_bank import MemoryBank

log = logging.getLogger(__name__)

SECTION_KEYS = {
    "memory_bank": dict,
    "memory_bank.member": str,
    "memory_bank.count": int,
    "memory_bank.dim": int,
    "memory_bank.dtype": str,
    "memory_bank.k": int,
}


class KnnHead(Head):
    """Patch features (N, C, h, w) -> the mean distance to the k nearest bank features, (N, h, w).

    The bank (manifest `memory_bank`) stays outside the engine, on the GPU with CuPy where asked
    and available, so that `edgead enroll` can grow it on the device.
    """

    name = "knn"

    def __init__(self, artifact: Artifact, section: dict[str, Any], device: str, backends: Mapping[str, Any], options: Mapping[str, Any] | None = None) -> None:
        super().__init__(artifact, section, device, backends, options)
        manifest = artifact.manifest
        require_keys(manifest, SECTION_KEYS, str(artifact.path))
        info = manifest["memory_bank"]
        bank = artifact.load_npy(info["member"])
        if bank.shape != (info["count"], info["dim"]):
            raise ArtifactError(f"{artifact.path}: memory bank has shape {bank.shape}, the manifest says {(info['count'], info['dim'])}")
        self.output = section.get("output", "features")
        self.bank = open_bank(bank, info["k"], device)

    def score(self, outputs: Mapping[str, np.ndarray]) -> np.ndarray:
        return patch_scores(outputs[self.output], self.bank)

    def describe(self) -> str:
        return f"knn ({self.bank.count} x {self.bank.dim}, k={self.bank.k}, {self.bank.device})"


def patch_scores(features: np.ndarray, bank: MemoryBank) -> np.ndarray:
    """Patch features (N, C, h, w) -> kNN patch scores (N, h, w)."""
    n, channels, h, w = features.shape
    return bank.score(features.transpose(0, 2, 3, 1).reshape(-1, channels)).reshape(n, h, w)


def open_bank(bank: np.ndarray, k: int, device: str) -> MemoryBank:
    """The bank on the GPU (CuPy) for a CUDA device where CuPy runs, else on the CPU."""
    if device.startswith("cuda"):
        try:
            return MemoryBank(bank, k=k, device="cuda")
        except EdgeADError as exc:
            log.warning("kNN memory bank stays on the CPU: %s", exc)
    return MemoryBank(bank, k=k)
