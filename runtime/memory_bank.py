"""Compact kNN memory bank: fp16 storage, exact search as a chunked matrix product with a running minimum."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from edgead.errors import ArtifactError, ConfigError

BLOCK_FLOATS = 1 << 21  # ranking values of one query block x bank chunk: 8 MiB fp32, stays in a desktop L3 cache
FP32_COPY_BYTES = 256 << 20  # keep the fp32 ranking rows of banks up to this size; bigger ones are upcast per call
REPEATED_ARGMIN_MAX_K = 8  # up to this k, k argmin passes beat one argpartition of the block


class MemoryBank:
    """Exact k-nearest-neighbour distances from query features to a bank of normal patch features.

    The bank is stored as fp16 (M, C). Search ranks bank rows by |b|^2 - 2 q.b (the query's own
    norm does not change the ranking), computed in fp32 as one matrix product [-2 q, 1] . [b, |b|^2]
    per bank chunk of `chunk_rows` rows and query block, keeps the k best per query, then recomputes
    the winners' distances directly. Banks up to FP32_COPY_BYTES also keep those fp32 rows
    (M, C + 1), 2x the fp16 bank, so that no call converts fp16 (numpy does it slowly).
    `device="cuda"` keeps the bank on the GPU and searches there with CuPy (`runtime/knn_gpu.py`).
    """

    def __init__(
        self, features: np.ndarray, k: int = 1, chunk_rows: int = 8192, dtype: type = np.float16, device: str = "cpu"
    ) -> None:
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[0] == 0:
            raise ArtifactError(f"memory bank must be a non-empty (M, C) array, got shape {features.shape}")
        if not np.all(np.isfinite(features)):
            raise ArtifactError("memory bank holds NaN or infinite values; re-train the model")
        if not 1 <= k <= features.shape[0]:
            raise ConfigError(f"k={k} must be between 1 and the bank size {features.shape[0]}")
        if chunk_rows < 1:
            raise ConfigError(f"chunk_rows={chunk_rows} must be at least 1")
        if device not in ("cpu", "cuda"):
            raise ConfigError(f"memory bank device {device!r} is not one of 'cpu', 'cuda'")
        self.features = np.ascontiguousarray(features, dtype=dtype)
        self.k = k
        self.chunk_rows = chunk_rows
        self.device = device
        as_fp32 = self.features.astype(np.float32)
        self._norms = np.einsum("ij,ij->i", as_fp32, as_fp32)
        self._gpu = self._ranking_bank = None
        if device == "cuda":
            from edgead.runtime.knn_gpu import GpuKnn  # CuPy is imported only when asked for

            self._gpu = GpuKnn(self.features, self._norms, chunk_rows)
        elif as_fp32.nbytes <= FP32_COPY_BYTES:
            self._ranking_bank = ranking_rows(as_fp32, self._norms, np)

    @property
    def count(self) -> int:
        return self.features.shape[0]

    @property
    def dim(self) -> int:
        return self.features.shape[1]

    def knn(self, queries: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Distances (Q, k) ascending and bank indices (Q, k) of the k nearest bank features."""
        k = self.k if k is None else k
        queries = np.asarray(queries)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ConfigError(f"queries must be (Q, {self.dim}), got {queries.shape}")
        if not 1 <= k <= self.count:
            raise ConfigError(f"k={k} must be between 1 and the bank size {self.count}")
        if self._gpu is not None:
            distances, indices = self._gpu.knn(queries, k)
        else:
            queries = np.ascontiguousarray(queries, dtype=np.float32)
            augmented = augment_queries(queries, np)
            indices = nearest_indices(augmented, self._ranking_chunks, k, min(self.chunk_rows, self.count), BLOCK_FLOATS, np)
            bank = self.features if self._ranking_bank is None else self._ranking_bank  # rows begin with b itself
            distances = exact_distances(queries, bank, indices, np)
        order = np.argsort(distances, axis=1, kind="stable")
        return np.take_along_axis(distances, order, axis=1), np.take_along_axis(indices, order, axis=1)

    def score(self, queries: np.ndarray) -> np.ndarray:
        """Patch anomaly scores (Q,): the mean distance to the k nearest bank features (k=1: the nearest)."""
        distances, _ = self.knn(queries)
        return distances.mean(axis=1) if self.k > 1 else distances[:, 0]

    def _ranking_chunks(self) -> Iterator:
        if self._ranking_bank is None:
            return ranking_chunks(self.features, self._norms, self.chunk_rows, np)
        return ((s, self._ranking_bank[s : s + self.chunk_rows]) for s in range(0, self.count, self.chunk_rows))


# The search below is written against an array module `xp` (numpy here, cupy in knn_gpu.py): one algorithm, two devices.


def ranking_rows(bank, norms, xp):
    """(M, C) bank and its squared norms (M,) -> (M, C + 1) fp32 rows [b, |b|^2]."""
    rows = xp.empty((bank.shape[0], bank.shape[1] + 1), dtype=xp.float32)
    rows[:, :-1] = bank
    rows[:, -1] = norms
    return rows


def ranking_chunks(features, norms, chunk_rows: int, xp) -> Iterator:
    """(start row, (m, C + 1) fp32 ranking rows) for each chunk of `chunk_rows` rows of the bank, built on the fly."""
    for start in range(0, features.shape[0], chunk_rows):
        yield start, ranking_rows(features[start : start + chunk_rows], norms[start : start + chunk_rows], xp)


def augment_queries(queries, xp):
    """(Q, C) queries -> (Q, C + 1) fp32 rows [-2 q, 1], so that one product gives |b|^2 - 2 q.b; x -2 is exact."""
    augmented = xp.empty((queries.shape[0], queries.shape[1] + 1), dtype=xp.float32)
    xp.multiply(queries, -2.0, out=augmented[:, :-1])
    augmented[:, -1] = 1.0
    return augmented


def nearest_indices(augmented, chunks: Callable[[], Iterator], k: int, chunk_cols: int, block_floats: int, xp):
    """Bank indices (Q, k), unordered, of the k smallest |b|^2 - 2 q.b, from augmented queries (Q, C + 1).

    `chunks()` yields (start row, (m <= chunk_cols, C + 1) ranking rows); each chunk serves every
    query block before the next is made, so a chunk built on the fly is built once per call.
    Scratch memory: one block of `block_floats` fp32 values.
    """
    n_queries = augmented.shape[0]
    block_rows = max(1, min(n_queries, block_floats // chunk_cols))
    buffer = xp.empty(block_rows * chunk_cols, dtype=xp.float32)  # reused: no fresh pages per block
    best_r = best_i = None
    for start, chunk in chunks():
        chunk_r = xp.empty((n_queries, min(k, chunk.shape[0])), dtype=xp.float32)
        chunk_i = xp.empty(chunk_r.shape, dtype=xp.int64)
        for q0 in range(0, n_queries, block_rows):
            q1 = min(q0 + block_rows, n_queries)
            block = buffer[: (q1 - q0) * chunk.shape[0]].reshape(q1 - q0, chunk.shape[0])
            xp.matmul(augmented[q0:q1], chunk.T, out=block)
            chunk_r[q0:q1], idx = smallest_k(block, chunk_r.shape[1], xp)
            chunk_i[q0:q1] = idx + start
        best_r, best_i = (chunk_r, chunk_i) if best_r is None else merge_smallest(best_r, best_i, chunk_r, chunk_i, k, xp)
    return best_i


def smallest_k(block, k: int, xp):
    """Values and column indices (n, k), unordered, of the k smallest values per row of `block` (n, m ≥ k).

    Overwrites `block` (a scratch buffer) where k > 1.
    """
    rows = xp.arange(block.shape[0])
    if k == 1:
        idx = xp.argmin(block, axis=1)
        return block[rows, idx][:, None], idx[:, None]
    if k == block.shape[1]:
        return block.copy(), xp.broadcast_to(xp.arange(k), block.shape)
    if k > REPEATED_ARGMIN_MAX_K:
        idx = xp.argpartition(block, k - 1, axis=1)[:, :k]
        return xp.take_along_axis(block, idx, axis=1), idx
    values = xp.empty((block.shape[0], k), dtype=block.dtype)
    idx = xp.empty((block.shape[0], k), dtype=xp.int64)
    for j in range(k):
        idx[:, j] = xp.argmin(block, axis=1)
        values[:, j] = block[rows, idx[:, j]]
        block[rows, idx[:, j]] = xp.inf  # the next pass finds the next smallest
    return values, idx


def merge_smallest(best_r, best_i, new_r, new_i, k: int, xp):
    """Keep the k smallest of two candidate sets (n, k) and (n, k') per row: (ranking values, indices)."""
    if k == 1:
        better = new_r < best_r
        return xp.where(better, new_r, best_r), xp.where(better, new_i, best_i)
    cand_r = xp.concatenate([best_r, new_r], axis=1)
    cand_i = xp.concatenate([best_i, new_i], axis=1)
    if cand_r.shape[1] <= k:  # chunks smaller than k: everything seen so far is a candidate
        return cand_r, cand_i
    keep = xp.argpartition(cand_r, k - 1, axis=1)[:, :k]
    return xp.take_along_axis(cand_r, keep, axis=1), xp.take_along_axis(cand_i, keep, axis=1)


def exact_distances(queries, bank, indices, xp):
    """Euclidean distances (Q, k) from fp32 queries (Q, C) to rows `indices` (Q, k) of `bank` (M, >= C), in fp32.

    Recomputed directly: the expanded form |q|^2 - 2 q.b + |b|^2 loses precision for near neighbours.
    """
    dim = queries.shape[1]
    distances = xp.empty(indices.shape, dtype=xp.float32)
    for j in range(indices.shape[1]):
        diff = bank[indices[:, j], :dim].astype(xp.float32, copy=False)
        diff -= queries
        distances[:, j] = xp.sqrt(xp.einsum("ij,ij->i", diff, diff))
    return distances
