"""The support head (small patch auto-encoder): how far a patch's latent code lies outside the support of good codes.

A one-class SVM with an RBF kernel, fitted at training time (scikit-learn) on the latent codes of good
patches, is stored as plain arrays: support vectors, dual coefficients, gamma and offset. Its decision
function is evaluated here without scikit-learn — the kernel as a chunked matrix product, in float64 —
with numpy on the CPU and CuPy on a CUDA device. The anomaly score of a patch is minus the decision
function: positive outside the support, negative inside.

The codes come per patch (stride-based patches: (N, 16, 17, 17)) or as a frame's dense latent grid
(N, 16, h, w), in which the code of the patch at origin (4i, 4j) is the 17x17 window at (i, j), and the
frame's map is each pixel's mean over the patches that cover it, as stitched patch maps are. The dense SVM
may take an inner part of each window (the manifest's `window`: its first cell and side; models before it, the
whole 17x17 window): the code cells at a window's border see 8 px of frame outside the patch, where a patch's
own code sees zero padding. On a grid the
windows are never gathered: |x - s|^2 = |x|^2 + |s|^2 - 2 x.s, where x.s for every window at once is the
grid's correlation with the support vector (an FFT correlation, read off at the patch positions only by a
partial inverse DFT) and |x|^2 a box sum of the squared grid (an integral image) — the same decision
function, in float64, for a seventh of the multiply-adds of the windows' matrix product.
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
}  # under the manifest section the head names (`svm`, or `dense_svm` for dense latents); `.window` is optional
CHUNK_FLOATS = 1 << 22  # kernel values per block (32 MiB in float64)
FRAMES_PER_BLOCK = 8  # dense latents: frames whose correlations are computed together (4.3 MB of spectra per frame per 119 support vectors)
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
        self._spectra_key: tuple | None = None  # the layout `window_spectra` last computed for, and its arrays
        self._spectra: tuple[Any, Any, Any] | None = None

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

    def window_decision(self, grids: np.ndarray, window_hw: tuple[int, int], rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(N, C, h, w) grids -> (N, len(rows), len(cols)) float64 decision values of the (C, kh, kw) windows with corners
        at those cells (each window flattened in (C, kh, kw) order, as `decision` takes it); numpy out.

        What `decision` gives for the copied windows, without copying them: the dot products with every support vector
        come from an FFT correlation of the grid, read off at the windows' corners only; the windows' squared norms from an
        integral image of the squared grid.
        """
        xp = self.xp
        if grids.ndim != 4:
            raise BackendError(f"the SVM takes windows of (N, C, h, w) grids, got an array of shape {grids.shape}")
        (kh, kw), channels = window_hw, grids.shape[1]
        height, width = int(rows.max()) + kh, int(cols.max()) + kw  # the cells any window covers
        if channels * kh * kw != self.dim or grids.shape[2] < height or grids.shape[3] < width:
            raise BackendError(f"the SVM takes {self.dim}-value windows of {kh}x{kw} cells; windows at rows up to {rows.max()} and columns up to {cols.max()} do not fit grids {grids.shape}")
        spectra, inverse_rows, inverse_cols = self.window_spectra(channels, (height, width), window_hw, rows, cols)
        out = xp.empty((grids.shape[0], len(rows), len(cols)), dtype=xp.float64)
        for start in range(0, grids.shape[0], FRAMES_PER_BLOCK):
            block = xp.asarray(grids[start : start + FRAMES_PER_BLOCK, :, :height, :width], dtype=xp.float64)
            n = block.shape[0]
            sums = xp.pad(xp.cumsum(xp.cumsum((block**2).sum(axis=1), axis=1), axis=2), ((0, 0), (1, 0), (1, 0)))  # integral image of x^2
            r, c = xp.asarray(rows)[:, None], xp.asarray(cols)[None, :]
            window_sq = sums[:, r + kh, c + kw] - sums[:, r, c + kw] - sums[:, r + kh, c] + sums[:, r, c]  # (n, gh, gw)
            freq = xp.fft.rfft2(block).reshape(n, channels, -1).transpose(2, 1, 0)  # (F, C, n): F = h * (w//2+1) bins
            freq = xp.matmul(spectra, xp.ascontiguousarray(freq))  # (F, S, n): the correlations' spectra, summed over C
            freq = xp.matmul(inverse_rows, freq.reshape(height, -1)).reshape(len(rows), -1, self.count, n)  # (gh, w//2+1, S, n): inverse DFT along rows, at `rows`
            dots = xp.tensordot(freq.real, inverse_cols[0], axes=([1], [0])) + xp.tensordot(freq.imag, inverse_cols[1], axes=([1], [0]))  # (gh, S, n, gw)
            sq_dist = window_sq.transpose(1, 0, 2)[:, None] + self.sq_norms[None, :, None, None] - 2.0 * dots
            xp.maximum(sq_dist, 0.0, out=sq_dist)  # rounding can take a distance of ~0 below zero
            out[start : start + n] = xp.tensordot(xp.exp(-self.gamma * sq_dist), self.dual_coef, axes=([1], [0])).transpose(1, 0, 2)
        out -= self.offset
        return out if xp is np else xp.asnumpy(out)

    def window_spectra(self, channels: int, grid_hw: tuple[int, int], window_hw: tuple[int, int], rows: np.ndarray, cols: np.ndarray) -> tuple[Any, Any, Any]:
        """The support vectors' conjugate spectra on an (h, w) grid, (h * (w//2+1), S, C) complex128, and the inverse DFT's
        matrices at `rows` (gh, h) and `cols` (real and imaginary parts, (w//2+1, gw) each), computed once per layout.

        The spectra take S * C * h * (w//2+1) * 16 bytes: 68 MB for 119 support vectors on the 66x66 latent grid of a 256 px frame.
        """
        key = (channels, grid_hw, window_hw, rows.tobytes(), cols.tobytes())
        if self._spectra_key != key:
            xp, (height, width), half = self.xp, grid_hw, grid_hw[1] // 2 + 1
            padded = xp.zeros((self.count, channels, height, width), dtype=xp.float64)
            padded[:, :, : window_hw[0], : window_hw[1]] = self.vectors.reshape(self.count, channels, *window_hw)
            spectra = xp.conj(xp.fft.rfft2(padded)).reshape(self.count, channels, -1).transpose(2, 0, 1)
            weight = np.full(half, 2.0)  # the half spectrum of a real signal: every bin but 0 (and w/2) stands for two
            weight[0] = 1.0
            if width % 2 == 0:
                weight[-1] = 1.0
            inverse_rows = np.exp(2j * np.pi * np.outer(rows, np.arange(height)) / height)
            inverse_cols = weight[:, None] * np.exp(2j * np.pi * np.outer(np.arange(half), cols) / width) / (height * width)
            self._spectra = (
                xp.ascontiguousarray(spectra), xp.asarray(inverse_rows),
                (xp.asarray(inverse_cols.real.copy()), xp.asarray(-inverse_cols.imag)),
            )
            self._spectra_key = key
        return self._spectra


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
        window = info.get("window") or {}  # the cells of each patch's 17x17 window the SVM takes; models before it: all
        self.window_first, self.window_cells = int(window.get("first_cell", 0)), int(window.get("cells", LATENT_PX))
        if self.window_first < 0 or self.window_cells < 1 or self.window_first + self.window_cells > LATENT_PX:
            raise ArtifactError(f"{artifact.path}: {key}.window {window} does not lie inside a patch's {LATENT_PX}x{LATENT_PX} code; re-train the model")
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
        if latent.ndim != 4 or latent.shape[2] < need[0] or latent.shape[3] < need[1] or latent.shape[1] * self.window_cells**2 != self.svm.dim:
            raise BackendError(f"the support head takes latent grids (N, {self.svm.dim // self.window_cells**2}, >= {need[0]}, >= {need[1]}) of {height}x{width} px frames, got {latent.shape}")
        scores = self.grid_scores(latent, rows // LATENT_STEP_PX, cols // LATENT_STEP_PX)
        return coverage_mean(scores, rows, cols, (height, width))

    def grid_scores(self, latent: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(N, C, h, w) latents -> (N, len(rows), len(cols)) scores of the patches whose 17x17 windows start at those latent
        rows and columns (each scored on the cells of its window that the SVM takes)."""
        first, cells = self.window_first, self.window_cells
        return (-self.svm.window_decision(latent, (cells, cells), rows + first, cols + first)).astype(np.float32)

    def describe(self) -> str:
        where = "numpy" if self.svm.xp is np else "cupy"
        inner = f" (cells {self.window_first}-{self.window_first + self.window_cells - 1} of each {LATENT_PX}x{LATENT_PX} window)" if self.window_cells != LATENT_PX else ""
        dense = f", patches every {self.stride_px} px of dense latents{inner}, by FFT correlation" if self.dense else ""
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
