"""The memory bank's search on a CUDA GPU through CuPy: the bank stays on the device in its storage dtype (fp16).

Same algorithm as the CPU path (`memory_bank.nearest_indices`, written against an array module):
each bank chunk is upcast to fp32 on the device, ranked by one matrix product per query block,
reduced to the k best per query, and the winners' distances are recomputed directly.
"""

from __future__ import annotations

import numpy as np

from edgead.errors import BackendError, DependencyError
from edgead.runtime.memory_bank import augment_queries, exact_distances, nearest_indices, ranking_chunks

GPU_BLOCK_FLOATS = 1 << 25  # 128 MiB of ranking values per product: few, large kernels


def import_cupy():
    """The cupy module, with a GPU it can use; DependencyError or BackendError saying what to do otherwise."""
    try:
        import cupy
    except ImportError as error:
        raise DependencyError(
            f"the memory bank on device='cuda' needs CuPy ({error}): `pip install cupy-cuda12x` "
            "(CUDA 12; cupy-cuda11x for CUDA 11), or use device='cpu'"
        ) from error
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError as error:
        raise BackendError(f"CuPy finds no usable CUDA GPU ({error}); check the driver with `nvidia-smi`, or use device='cpu'") from error
    if count == 0:
        raise BackendError("CuPy finds no CUDA GPU; use device='cpu'")
    return cupy


class GpuKnn:
    """k nearest bank rows for queries, searched on the GPU; results come back as numpy arrays.

    `xp` is the array module (cupy by default; numpy runs the same code on the CPU, for tests).
    """

    def __init__(self, features: np.ndarray, norms: np.ndarray, chunk_rows: int, xp=None) -> None:
        self.xp = import_cupy() if xp is None else xp
        self.features = self.xp.asarray(features)  # (M, C), fp16 unless the bank was made with another dtype
        self.norms = self.xp.asarray(norms, dtype=self.xp.float32)  # (M,) squared norms of the stored rows
        self.chunk_rows = chunk_rows

    def knn(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Distances (Q, k) fp32 and bank indices (Q, k) int64 of the k nearest rows, unordered within a row."""
        xp, count = self.xp, self.features.shape[0]
        queries = xp.asarray(queries, dtype=xp.float32)  # one copy to the device
        chunks = lambda: ranking_chunks(self.features, self.norms, self.chunk_rows, xp)
        indices = nearest_indices(augment_queries(queries, xp), chunks, k, min(self.chunk_rows, count), GPU_BLOCK_FLOATS, xp)
        distances = exact_distances(queries, self.features, indices, xp)
        return to_host(distances), to_host(indices)


def to_host(array) -> np.ndarray:
    """A numpy array from a cupy one (a copy from the device), or the numpy array itself."""
    return array.get() if hasattr(array, "get") else np.asarray(array)
