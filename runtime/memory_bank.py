"""Compact kNN memory bank: fp16 storage, exact search as a chunked matrix product with a running minimum."""

from __future__ import annotations

import numpy as np

from edgead.errors import ArtifactError, ConfigError


class MemoryBank:
    """Exact k-nearest-neighbour distances from query features to a bank of normal patch features.

    The bank is stored as fp16 (M, C); search upcasts one chunk at a time to fp32 and keeps
    the k smallest squared distances per query, so memory stays O(Q * chunk_rows).
    """

    def __init__(self, features: np.ndarray, k: int = 1, chunk_rows: int = 8192, dtype: type = np.float16) -> None:
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[0] == 0:
            raise ArtifactError(f"memory bank must be a non-empty (M, C) array, got shape {features.shape}")
        if not np.all(np.isfinite(features)):
            raise ArtifactError("memory bank holds NaN or infinite values; re-train the model")
        if not 1 <= k <= features.shape[0]:
            raise ConfigError(f"k={k} must be between 1 and the bank size {features.shape[0]}")
        self.features = np.ascontiguousarray(features, dtype=dtype)
        self.k = k
        self.chunk_rows = chunk_rows
        as_fp32 = self.features.astype(np.float32)
        self._norms = np.einsum("ij,ij->i", as_fp32, as_fp32)

    @property
    def count(self) -> int:
        return self.features.shape[0]

    @property
    def dim(self) -> int:
        return self.features.shape[1]

    def knn(self, queries: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Distances (Q, k) ascending and bank indices (Q, k) of the k nearest bank features."""
        k = self.k if k is None else k
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ConfigError(f"queries must be (Q, {self.dim}), got {queries.shape}")
        q_norms = np.einsum("ij,ij->i", queries, queries)[:, None]
        best_d = np.full((queries.shape[0], 0), np.inf, dtype=np.float32)
        best_i = np.zeros((queries.shape[0], 0), dtype=np.int64)
        for start in range(0, self.count, self.chunk_rows):
            chunk = np.asarray(self.features[start : start + self.chunk_rows], dtype=np.float32)
            d2 = queries @ chunk.T
            d2 *= -2.0
            d2 += q_norms
            d2 += self._norms[start : start + chunk.shape[0]][None, :]
            if k == 1:
                idx = np.argmin(d2, axis=1)[:, None]
            else:
                kk = min(k, d2.shape[1])
                idx = np.argpartition(d2, kk - 1, axis=1)[:, :kk]
            cand_d = np.concatenate([best_d, np.take_along_axis(d2, idx, axis=1)], axis=1)
            cand_i = np.concatenate([best_i, idx + start], axis=1)
            if cand_d.shape[1] > k:
                keep = np.argpartition(cand_d, k - 1, axis=1)[:, :k]
                cand_d = np.take_along_axis(cand_d, keep, axis=1)
                cand_i = np.take_along_axis(cand_i, keep, axis=1)
            best_d, best_i = cand_d, cand_i
        # the expanded form loses precision for near neighbours (cancellation): recompute the winners directly
        exact = np.empty(best_i.shape, dtype=np.float32)
        for j in range(best_i.shape[1]):
            diff = queries - self.features[best_i[:, j]].astype(np.float32)
            exact[:, j] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
        order = np.argsort(exact, axis=1, kind="stable")
        return np.take_along_axis(exact, order, axis=1), np.take_along_axis(best_i, order, axis=1)

    def score(self, queries: np.ndarray) -> np.ndarray:
        """Patch anomaly scores (Q,): the mean distance to the k nearest bank features (k=1: the nearest)."""
        distances, _ = self.knn(queries)
        return distances.mean(axis=1) if self.k > 1 else distances[:, 0]
