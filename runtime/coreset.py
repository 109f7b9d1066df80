"""Coreset subsampling of patch features: greedy k-center (PatchCore's), exact or streamed in chunks.

`greedy_coreset` is farthest-point sampling over all features at once: time O(N x bank), and the
whole (N, C) array in memory. `StreamingCoreset` takes features batch by batch and runs the same
greedy on chunks of `chunk_rows` rows, each reduced to its share of the bank as soon as it is
full: time linear in N for a fixed fraction (each pick reads one chunk, not all N), memory one
chunk plus the bank, and an exact coverage radius per chunk whose maximum bounds every feature's
distance to the bank. The search is written against an array module `xp`: numpy here, CuPy on a GPU.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any
from dataclasses import dataclass

import numpy as np

from edgead.errors import ConfigError, EdgeADError
from edgead.runtime.memory_bank import MemoryBank

log = logging.getLogger(__name__)

CHUNK_ROWS = 16384  # one chunk's 64-channel projection is 4 MiB: each greedy pick reads it from cache
EXACT_ROWS = 49152  # streams up to this many rows (48 images at 256 px) get the exact greedy over all of them
WINDOW = 2  # picks of this many previous chunks count as covering a new chunk
OVERPICK = 2  # a chunk's greedy order runs to this many times its share, so that varied chunks can keep more


@dataclass(frozen=True)
class Coreset:
    """Indices into the input features, and the radius: every input feature lies within it of the coreset."""

    indices: np.ndarray
    radius: float


def greedy_coreset(
    features: np.ndarray,
    target: int,
    projection_dim: int = 64,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    measure_radius: bool = True,
) -> Coreset:
    """Pick `target` rows of `features` (N, C) by farthest-point sampling over all of them.

    Distances are computed in a random Gaussian projection to `projection_dim` channels
    (Johnson–Lindenstrauss) to make each step a cheap matrix-vector product; the reported
    radius is exact, measured in the original space (NaN with measure_radius=False, which saves a
    kNN pass over every feature). `progress(n)` is called with steps done.
    """
    features = np.ascontiguousarray(features, dtype=np.float32)
    n = _check_features(features, target)
    rng = np.random.default_rng(seed)
    projected = project(features, random_projection(features.shape[1], projection_dim, rng), np)
    selected = greedy_picks(projected, target, int(rng.integers(n)), np, progress)
    radius = coverage_radius(features, features[selected]) if measure_radius else float("nan")
    return Coreset(indices=selected, radius=radius)


def chunked_coreset(
    features: np.ndarray,
    target: int,
    projection_dim: int = 64,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    chunk_rows: int = CHUNK_ROWS,
    window: int = WINDOW,
    exact_rows: int = 0,
) -> Coreset:
    """`greedy_coreset`'s contract, computed chunk by chunk (`StreamingCoreset`): linear time, bounded memory.

    The bank holds `target` rows; the radius bounds every row's distance to the coreset (each
    chunk's radius is exact, against its own picks and those of the chunks before it that it counted).
    """
    features = np.asarray(features)
    n = _check_features(features, target)
    sampler = StreamingCoreset(
        target / n, features.shape[1], projection_dim, seed, chunk_rows, progress=progress, max_count=target, window=window,
        exact_rows=exact_rows,
    )
    for start in range(0, n, chunk_rows):
        sampler.add(features[start : start + chunk_rows])
    bank = sampler.finish()
    return Coreset(indices=bank.indices, radius=bank.radius)


@dataclass(frozen=True)
class StreamedBank:
    """What a StreamingCoreset kept: rows (M, C) float32, their indices in the stream (M,), and the coverage radius."""

    features: np.ndarray
    indices: np.ndarray
    radius: float
    seen: int


class StreamingCoreset:
    """Greedy coreset over a stream of feature batches, one chunk of `chunk_rows` rows at a time.

    add((n, C) features) as they are extracted; finish() reduces the last chunk and returns the
    bank, round(fraction x rows seen) rows (at most `max_count`). Each chunk is ordered by
    farthest-point sampling in a fixed random projection, up to OVERPICK times its share; the
    greedy radius after each pick says how well every prefix covers the chunk. A chunk keeps the
    prefix that a common radius threshold gives it, the threshold that spends the budget over all
    chunks so far: redundant chunks (a static scene, repeated frames) keep few rows, varied ones
    many. Its exact radius in the original space is measured before the chunk is dropped.
    `device="cuda"` runs the greedy on the GPU with CuPy (falls back to the CPU with a warning).
    `progress(n)` is called with rows reduced.
    """

    def __init__(
        self,
        fraction: float,
        dim: int,
        projection_dim: int = 64,
        seed: int = 0,
        chunk_rows: int = CHUNK_ROWS,
        device: str = "cpu",
        progress: Callable[[int], None] | None = None,
        max_count: int | None = None,
        window: int = WINDOW,
        exact_rows: int = EXACT_ROWS,
    ) -> None:
        if not 0 < fraction <= 1:
            raise ConfigError(f"coreset fraction must be in (0, 1], got {fraction}")
        if chunk_rows < 1:
            raise ConfigError(f"chunk_rows={chunk_rows} must be at least 1")
        if max_count is not None and max_count < 1:
            raise ConfigError(f"coreset count must be >= 1, got {max_count}")
        self.fraction = fraction
        self.dim = dim
        self.chunk_rows = chunk_rows
        self.max_count = max_count
        self.exact_rows = exact_rows
        self.progress = progress
        self._xp = array_module(device)
        self._rng = np.random.default_rng(seed)
        projection = random_projection(dim, projection_dim, self._rng)  # None: features no wider than the projection
        self._projection = None if projection is None else self._xp.asarray(projection)
        self._pending: list[np.ndarray] = []
        self._pending_rows = 0
        self._seen = 0
        self._kept: list[np.ndarray] = []
        self._kept_indices: list[np.ndarray] = []
        self._kept_count = 0
        self._profiles: list[np.ndarray] = []  # per chunk: squared greedy radius after each pick, descending
        self._radius = 0.0
        self._recent: deque = deque(maxlen=window)  # (projected, original) picks of the last chunks, on the device

    def add(self, features: np.ndarray) -> None:
        """Take a batch of features (n, C); chunks are reduced once the stream has gone past them."""
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ConfigError(f"coreset stream takes (n, {self.dim}) features, got {features.shape}")
        if features.shape[0]:
            self._pending.append(features)
            self._pending_rows += features.shape[0]
        # a stream that ends within exact_rows gets the exact greedy; past it, chunks are reduced as long as a
        # whole chunk stays pending: the last reduction sees at least one chunk's rows, enough to spend what
        # the budget has left after redundant chunks kept few
        if not self._seen and self._pending_rows <= self.exact_rows:
            return
        while self._pending_rows >= 2 * self.chunk_rows:
            self._reduce(self._take(self.chunk_rows), last=False)

    def finish(self) -> StreamedBank:
        """Reduce what is left and return the bank; raises if no feature was added."""
        if not self._seen and self._pending_rows:
            return self._exact()
        if self._pending_rows:
            self._reduce(self._take(self._pending_rows), last=True)
        if not self._kept:
            raise ConfigError("the coreset stream got no features")
        return StreamedBank(np.concatenate(self._kept), np.concatenate(self._kept_indices), self._radius, self._seen)

    def _take(self, rows: int) -> np.ndarray:
        """The first `rows` pending rows as one fp32 array; the rest stay pending."""
        pending = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        chunk, rest = pending[:rows], pending[rows:]
        self._pending, self._pending_rows = ([rest] if rest.shape[0] else []), rest.shape[0]
        return np.ascontiguousarray(chunk, dtype=np.float32)

    def _exact(self) -> StreamedBank:
        features = self._take(self._pending_rows)
        target = self._budget(features.shape[0])
        xp = self._xp
        rows = xp.asarray(features)
        picks = greedy_picks(project(rows, self._projection, xp), target, int(self._rng.integers(features.shape[0])), xp)
        radius = float(nearest_distances(rows, rows[xp.asarray(picks)], xp).max())
        if self.progress is not None:
            self.progress(features.shape[0])
        return StreamedBank(features[picks], picks, radius, features.shape[0])

    def _budget(self, seen: int) -> int:
        budget = max(1, round(self.fraction * seen))
        return budget if self.max_count is None else min(budget, self.max_count)

    def _reduce(self, chunk: np.ndarray, last: bool) -> None:
        xp, rows_in = self._xp, chunk.shape[0]
        seen = self._seen + rows_in
        share = max(1, round(self.fraction * rows_in))
        left = self._budget(seen) - self._kept_count  # the last chunk may need more than its share, or less
        order_len = min(rows_in, max(1, left if last else int(OVERPICK * share)))
        rows = xp.asarray(chunk)
        projected = project(rows, self._projection, xp)
        recent = list(self._recent)
        covered = None
        if recent:  # what the last chunks' picks already cover is not picked again
            covered = nearest_distances(projected, xp.concatenate([p for p, _ in recent]), xp) ** 2
        first = int(self._rng.integers(rows_in))
        order, profile = greedy_picks(projected, order_len, first, xp, with_radii=True, covered=covered)
        self._profiles.append(profile)
        if last:
            keep = left
        else:
            keep = _prefix_under(profile, _threshold(self._profiles, self._budget(seen)))
        if self.max_count is not None:
            keep = min(keep, self.max_count - self._kept_count)
        keep = min(order_len, max(0 if recent else 1, keep))  # a chunk that earlier picks cover may keep none
        picks = xp.asarray(order[:keep])
        centres = xp.concatenate([rows[picks]] + [r for _, r in recent])
        self._radius = max(self._radius, float(nearest_distances(rows, centres, xp).max()))
        if keep:
            self._recent.append((projected[picks], rows[picks]))  # the last chunks that kept rows
        self._kept.append(chunk[order[:keep]])
        self._kept_indices.append(order[:keep] + self._seen)
        self._kept_count += keep
        self._seen = seen
        if self.progress is not None:
            self.progress(rows_in)


def _threshold(profiles: list[np.ndarray], budget: int) -> float:
    """The squared radius at which the chunks' greedy orders, each cut where it falls to it, spend `budget` picks.

    A chunk cut at threshold t keeps (its radii above t) + 1 picks, so the radii above t number
    budget - chunks: t is the next largest.
    """
    radii = np.concatenate(profiles)
    above = budget - len(profiles)
    if above < 0:
        return np.inf
    if above >= radii.size:
        return -np.inf
    return float(np.partition(radii, radii.size - 1 - above)[radii.size - 1 - above])


def _prefix_under(profile: np.ndarray, threshold: float) -> int:
    """Picks of a greedy order needed before its radius (a descending `profile`) falls to `threshold`."""
    return int(np.searchsorted(-profile, -threshold, side="left")) + 1


def random_projection(dim: int, projection_dim: int, rng: np.random.Generator) -> np.ndarray | None:
    """(dim, projection_dim) Gaussian projection scaled to keep distances, or None when it would not shrink."""
    if dim <= projection_dim:
        return None
    projection = rng.standard_normal((dim, projection_dim), dtype=np.float32)
    return projection / np.float32(np.sqrt(projection_dim))


def project(features, projection, xp):
    return features if projection is None else features @ projection


def greedy_picks(
    projected, target: int, first: int, xp, progress: Callable[[int], None] | None = None, with_radii: bool = False, covered=None
):
    """Indices (target,) of farthest-point sampling over rows of `projected` (n, d), starting at row `first`.

    with_radii: also the squared radius (target,) of the picks so far after each pick, in the projection.
    covered: squared distances (n,) of the rows to centres chosen before; the first pick is then the
    row farthest from them, and every radius counts them.
    """
    n = projected.shape[0]
    norms = xp.einsum("ij,ij->i", projected, projected)
    selected = np.empty(target, dtype=np.int64)
    if covered is None:
        current, min_d2 = first, xp.full(n, np.inf, dtype=xp.float32)
    else:
        min_d2 = xp.array(covered, dtype=xp.float32)
        current = int(xp.argmax(min_d2))
    d2 = xp.empty(n, dtype=xp.float32)
    radii = np.empty(target, dtype=np.float32) if with_radii else None
    report_every = max(1, target // 100)
    # numpy: einsum's own single-threaded loop, not BLAS; a multi-threaded BLAS matrix-vector product per
    # pick stalls on every thread hand-over when the cores are shared (151 s instead of 23 s for 3,686
    # picks of 36,864 rows on 2 busy cores), and one core is as fast for a product this small
    if xp is np:
        def product(row, out):
            np.einsum("ij,j->i", projected, row, out=out)
    else:
        def product(row, out):
            xp.matmul(projected, row, out=out)
    for step in range(target):
        selected[step] = current
        product(projected[current], d2)
        d2 *= -2.0
        d2 += norms
        d2 += norms[current]
        xp.minimum(min_d2, d2, out=min_d2)
        min_d2[current] = -1.0  # never pick a chosen row again, even when duplicates make d2 == 0
        current = int(xp.argmax(min_d2))
        if with_radii:
            radii[step] = float(min_d2[current])
        if progress is not None and (step + 1) % report_every == 0:
            progress(report_every)
    if progress is not None and target % report_every:
        progress(target % report_every)
    return (selected, radii) if with_radii else selected


def coreset_target(settings: dict[str, Any], n_features: int) -> int:
    """Bank size for `n_features` under a manifest's `memory_bank.coreset` (a fraction or a count)."""
    if settings.get("count") is not None:
        return min(int(settings["count"]), n_features)
    return max(1, min(n_features, round(float(settings["fraction"]) * n_features)))


def coverage_radius(features: np.ndarray, coreset: np.ndarray, chunk: int = 16384) -> float:
    """Largest distance from any row of `features` to its nearest row of `coreset` (fp32, exact)."""
    bank = MemoryBank(coreset, k=1, dtype=np.float32)  # fp32: the radius is exact, not fp16-rounded
    radius = 0.0
    for start in range(0, features.shape[0], chunk):
        radius = max(radius, float(bank.score(features[start : start + chunk]).max()))
    return radius


def nearest_distances(rows, centres, xp):
    """Distances (n,) fp32 from each of `rows` (n, C) to its nearest row of `centres` (m, C), exact, on xp's device."""
    if xp is np:
        distances, _ = MemoryBank(centres, k=1, dtype=np.float32).knn(rows)
        return distances[:, 0]
    from edgead.runtime.knn_gpu import GpuKnn

    norms = xp.einsum("ij,ij->i", centres, centres)
    distances, _ = GpuKnn(centres, norms, CHUNK_ROWS, xp=xp).knn(rows, 1)
    return xp.asarray(distances[:, 0])


def array_module(device: str):
    """numpy for "cpu"; CuPy for "cuda" where it imports and sees a GPU, else numpy with a warning."""
    if device == "cpu":
        return np
    if not device.startswith("cuda"):
        raise ConfigError(f"coreset device {device!r} is not one of 'cpu', 'cuda'")
    try:
        from edgead.runtime.knn_gpu import import_cupy

        return import_cupy()
    except EdgeADError as exc:
        log.warning("coreset runs on the CPU: %s", exc)
        return np


def _to_numpy(array) -> np.ndarray:
    return array if isinstance(array, np.ndarray) else array.get()


def _check_features(features: np.ndarray, target: int) -> int:
    """The number of rows N of a non-empty (N, C) array that `target` coreset rows can be picked from."""
    if features.ndim != 2 or features.shape[0] == 0:
        raise ConfigError(f"coreset needs a non-empty (N, C) feature array, got {features.shape}")
    n = features.shape[0]
    if not 1 <= target <= n:
        raise ConfigError(f"coreset size {target} must be between 1 and the number of features {n}")
    return n
