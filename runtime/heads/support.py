"""The support head (small patch auto-encoder): how far a patch's latent code lies outside the support of good codes.

A one-class SVM with an RBF kernel, fitted at training time (scikit-learn) on the latent codes of good
patches, is stored as plain arrays: support vectors, dual coefficients, gamma and offset. Its decision
function is evaluated here without scikit-learn — the kernel as a chunked matrix product, in float64 —
with numpy on the CPU and CuPy on a CUDA device. The anomaly score of a patch is minus the decision
function: positive outside the support, negative inside.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from edgead.artifact import Artifact, require_keys
from edgead.errors import ArtifactError, BackendError, EdgeADError
from edgead.runtime.heads.base import Head

log = logging.getLogger(__name__)

SECTION_KEYS = {
    "svm": dict,
    "svm.support_vectors.member": str,
    "svm.dual_coef.member": str,
    "svm.gamma": (int, float),
    "svm.offset": (int, float),
    "svm.count": int,
    "svm.dim": int,
}
CHUNK_FLOATS = 1 << 22  # kernel values per block (32 MiB in float64)


class SupportVectors:
    """An RBF one-class SVM as arrays: decision(x) = sum_i dual_coef_i exp(-gamma |x - sv_i|^2) - offset.

    This is scikit-learn's `OneClassSVM.decision_function`; `xp` is numpy or cupy (the arrays live there).
    """

    def __init__(self, support_vectors: np.ndarray, dual_coef: np.ndarray, gamma: float, offset: float, xp: Any = np) -> None:
        if support_vectors.ndim != 2 or dual_coef.shape != (support_vectors.shape[0],):
            raise ArtifactError(f"support vectors {support_vectors.shape} and dual coefficients {dual_coef.shape} do not match")
        self.xp = xp
        self.vectors = xp.asarray(support_vectors, dtype=xp.float64)
        self.dual_coef = xp.asarray(dual_coef, dtype=xp.float64)
        self.sq_norms = (self.vectors**2).sum(axis=1)
        self.gamma, self.offset = float(gamma), float(offset)

    @property
    def count(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def decision(self, x: np.ndarray) -> np.ndarray:
        """(n, dim) vectors -> (n,) float64 decision values, positive inside the support; numpy out."""
        xp = self.xp
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise BackendError(f"the SVM takes (n, {self.dim}) vectors, got {x.shape}")
        x = xp.asarray(x, dtype=xp.float64)
        out = xp.empty(x.shape[0], dtype=xp.float64)
        rows = max(1, CHUNK_FLOATS // max(1, self.count))
        for start in range(0, x.shape[0], rows):  # blocks of queries against every support vector
            block = x[start : start + rows]
            sq_dist = (block**2).sum(axis=1)[:, None] + self.sq_norms[None, :] - 2.0 * (block @ self.vectors.T)
            xp.maximum(sq_dist, 0.0, out=sq_dist)  # rounding can take a distance of ~0 below zero
            out[start : start + rows] = xp.exp(-self.gamma * sq_dist) @ self.dual_coef
        out -= self.offset
        return out if xp is np else xp.asnumpy(out)


class SupportHead(Head):
    """Latent codes (N, C, h, w) of patches -> one score per patch, (N, 1, 1): minus the SVM's decision function."""

    name = "support"

    def __init__(self, artifact: Artifact, section: dict[str, Any], device: str, backends: Mapping[str, Any]) -> None:
        super().__init__(artifact, section, device, backends)
        manifest = artifact.manifest
        require_keys(manifest, SECTION_KEYS, str(artifact.path))
        info = manifest["svm"]
        vectors = artifact.load_npy(info["support_vectors"]["member"])
        dual_coef = artifact.load_npy(info["dual_coef"]["member"])
        if vectors.shape != (info["count"], info["dim"]) or dual_coef.shape != (info["count"],):
            raise ArtifactError(
                f"{artifact.path}: SVM arrays are {vectors.shape} and {dual_coef.shape}, the manifest says {info['count']} x {info['dim']}"
            )
        self.output = section.get("output", "latent")
        self.svm = SupportVectors(vectors, dual_coef, info["gamma"], info["offset"], array_module(device))

    def score(self, outputs: Mapping[str, np.ndarray]) -> np.ndarray:
        latent = outputs[self.output]
        n = latent.shape[0]
        return (-self.svm.decision(latent.reshape(n, -1))).astype(np.float32).reshape(n, 1, 1)

    def describe(self) -> str:
        where = "numpy" if self.svm.xp is np else "cupy"
        return f"support (one-class SVM, {self.svm.count} x {self.svm.dim} support vectors, {where})"


def array_module(device: str) -> Any:
    """cupy for a CUDA device where CuPy runs, else numpy (with a warning when CUDA was asked for)."""
    if device.startswith("cuda"):
        try:
            from edgead.runtime.knn_gpu import import_cupy

            return import_cupy()
        except EdgeADError as exc:
            log.warning("the SVM stays on the CPU: %s", exc)
    return np
