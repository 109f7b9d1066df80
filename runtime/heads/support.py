"""The support head (small patch auto-encoder): how far a patch's latent code lies outside the support of good codes.

A one-class SVM with an RBF kernel, fitted at training time (scikit-learn) on the latent codes of good
patches, is stored as plain arrays: support vectors, dual coefficients, gamma and offset. Its decision
function is evaluated here without scikit-learn — the kernel as a chunked matrix product, in float64 —
with numpy on the CPU and CuPy on a CUDA device. The anomaly score of a patch is minus the decision
function: positive outside the support, negative inside.

The codes come per patch (stride-based patches: (N, 16, 17, 17)) or as a frame's dense latent grid
(N, 16, h, w), in which the code of the patch at origin (4i, 4j) is the 17x17 window at (i, j): the windows
of every patch position are read off the grid as strided views, gathered a chunk of patches at a time,
and the frame's map is each pixel's mean over the patches that cover it, as stitched patch maps are.
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
    "": dict,
    ".support_vectors.member": str,
    ".dual_coef.member": str,
    ".gamma": (int, float),
    ".offset": (int, float),
    ".count": int,
    ".dim": int,
}  # under the manifest section the head names (`svm`, or `dense_svm` for dense latents)
CHUNK_FLOATS = 1 << 22  # kernel values per block (32 MiB in float64)
CHUNK_PATCHES = 1024  # dense latents: patch windows gathered per block (19 MB of float32 codes)
PATCH_PX, LATENT_PX, LATENT_STEP_PX = 63, 17, 4  # the small auto-encoder's patch, its code's side, frame px per latent cell


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
    """Latent codes (N, C, 17, 17) of patches -> one score per patch, (N, 1, 1): minus the SVM's decision function;
    or dense latent grids (N, C, h, w) of frames -> (N, H, W) maps of the patches' scores, averaged where they overlap."""

    name = "support"

    def __init__(self, artifact: Artifact, section: dict[str, Any], device: str, backends: Mapping[str, Any]) -> None:
        super().__init__(artifact, section, device, backends)
        manifest = artifact.manifest
        key = section.get("svm", "svm")
        require_keys(manifest, {key + name: kind for name, kind in SECTION_KEYS.items()}, str(artifact.path))
        info = manifest[key]
        vectors = artifact.load_npy(info["support_vectors"]["member"])
        dual_coef = artifact.load_npy(info["dual_coef"]["member"])
        if vectors.shape != (info["count"], info["dim"]) or dual_coef.shape != (info["count"],):
            raise ArtifactError(
                f"{artifact.path}: SVM arrays are {vectors.shape} and {dual_coef.shape}, the manifest says {info['count']} x {info['dim']}"
            )
        self.output = section.get("output", "latent")
        self.svm = SupportVectors(vectors, dual_coef, info["gamma"], info["offset"], array_module(device))
        self.dense = not (manifest.get("tiling") or {}).get("patches")  # frames' latent grids, not one code per patch
        if self.dense:
            self.stride_px = int(section.get("patch_stride_px", 0))
            if self.stride_px < LATENT_STEP_PX or self.stride_px % LATENT_STEP_PX:
                raise ArtifactError(f"{artifact.path}: head.patch_stride_px {self.stride_px} is not a multiple of {LATENT_STEP_PX}; dense latents need one: re-train the model")
            self.frame_px = tuple(int(x) for x in manifest["input"]["size_px"])

    def score(self, outputs: Mapping[str, np.ndarray]) -> np.ndarray:
        latent = outputs[self.output]
        n = latent.shape[0]
        if self.dense:
            return self.score_dense(latent)
        return (-self.svm.decision(latent.reshape(n, -1))).astype(np.float32).reshape(n, 1, 1)

    def score_dense(self, latent: np.ndarray) -> np.ndarray:
        """Dense latent grids (N, C, h, w) of frames at the input size -> (N, H, W) maps: per pixel, the mean of its patches' scores."""
        height, width = self.frame_px
        rows, cols = patch_starts(height, self.stride_px), patch_starts(width, self.stride_px)
        need = (rows[-1] // LATENT_STEP_PX + LATENT_PX, cols[-1] // LATENT_STEP_PX + LATENT_PX)
        if latent.ndim != 4 or latent.shape[2] < need[0] or latent.shape[3] < need[1] or latent.shape[1] * LATENT_PX**2 != self.svm.dim:
            raise BackendError(f"the support head takes latent grids (N, {self.svm.dim // LATENT_PX**2}, >= {need[0]}, >= {need[1]}) of {height}x{width} px frames, got {latent.shape}")
        scores = self.grid_scores(latent, rows // LATENT_STEP_PX, cols // LATENT_STEP_PX)
        return coverage_mean(scores, rows, cols, (height, width))

    def grid_scores(self, latent: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(N, C, h, w) latents -> (N, len(rows), len(cols)) scores of the 17x17 windows at those latent rows and columns."""
        # (N, h', w', C, 17, 17): every window, a view; a window's axes in the patch graph's order (C, 17, 17)
        windows = np.lib.stride_tricks.sliding_window_view(latent, (LATENT_PX, LATENT_PX), axis=(2, 3)).transpose(0, 2, 3, 1, 4, 5)
        n, gw, per = latent.shape[0], len(cols), max(1, CHUNK_PATCHES // len(cols))
        scores = np.empty((n, len(rows), gw), dtype=np.float32)
        block = np.empty((per * gw, *windows.shape[3:]), dtype=np.float64)  # the one copy of the codes, in the SVM's dtype
        for i in range(n):
            for start in range(0, len(rows), per):
                chunk = rows[start : start + per]
                for k, row in enumerate(chunk):
                    block[k * gw : (k + 1) * gw] = windows[i, row, cols]
                codes = block[: len(chunk) * gw].reshape(-1, self.svm.dim)
                scores[i, start : start + len(chunk)] = -self.svm.decision(codes).reshape(-1, gw)
        return scores

    def describe(self) -> str:
        where = "numpy" if self.svm.xp is np else "cupy"
        dense = f", patches every {self.stride_px} px of dense latents" if self.dense else ""
        return f"support (one-class SVM, {self.svm.count} x {self.svm.dim} support vectors, {where}{dense})"


def patch_starts(size_px: int, stride_px: int) -> np.ndarray:
    """Patch origins along one side for dense latents: every stride_px, the last moved to the next latent cell past the edge.

    Unlike tiles, the last patch cannot end exactly at the edge (it must start on the 4 px latent grid): it may
    reach up to 3 px past it, into the reflected border the dense graph adds.
    """
    if size_px < PATCH_PX:
        raise BackendError(f"a {size_px} px side holds no {PATCH_PX} px patch")
    starts = list(range(0, size_px - PATCH_PX + 1, stride_px))
    if starts[-1] < size_px - PATCH_PX:
        starts.append(-(-(size_px - PATCH_PX) // LATENT_STEP_PX) * LATENT_STEP_PX)
    return np.array(starts, dtype=np.int64)


def coverage_mean(scores: np.ndarray, rows: np.ndarray, cols: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray:
    """Patch scores (N, gh, gw) at origins rows x cols -> (N, H, W) float32: each pixel's mean over the patches covering it.

    What stitching constant patch maps gives (overlaps averaged), as two small matrix products: with A (gh, H)
    marking the rows each patch covers and B (gw, W) the columns, the sum is A^T S B and the count A^T 1 B.
    """
    height, width = frame_hw
    a = (np.arange(height)[None, :] >= rows[:, None]) & (np.arange(height)[None, :] < rows[:, None] + PATCH_PX)
    b = (np.arange(width)[None, :] >= cols[:, None]) & (np.arange(width)[None, :] < cols[:, None] + PATCH_PX)
    a, b = a.astype(np.float64), b.astype(np.float64)
    counts = a.sum(axis=0)[:, None] * b.sum(axis=0)[None, :]
    return np.stack([(a.T @ s.astype(np.float64) @ b) / counts for s in scores]).astype(np.float32)


def array_module(device: str) -> Any:
    """cupy for a CUDA device where CuPy runs, else numpy (with a warning when CUDA was asked for)."""
    if device.startswith("cuda"):
        try:
            from edgead.runtime.knn_gpu import import_cupy

            return import_cupy()
        except EdgeADError as exc:
            log.warning("the SVM stays on the CPU: %s", exc)
    return np
