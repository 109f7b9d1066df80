"""Restoration of code grids under an autoregressive prior: find the codes the prior finds unlikely, resample them.

numpy only. `prior(codes (n, h, w) int64) -> log-probabilities (n, h, w, K)` is any callable: an
engine's `infer`, or a function in tests. A code at (m, n) is replaced when its likelihood
p(z_mn | z_<mn) is below eta and so is the likelihood of at least one code of the lower half of
its 8-neighbourhood — (m, n+1), (m+1, n-1), (m+1, n), (m+1, n+1) — the paper's local constraint
(the bottom-right code, with no such neighbour, is judged on its own likelihood).

- `restore_exact`: the paper's method. Codes are visited in raster order and each decision sees
  the codes before it as already restored. A prior pass is needed again only after a code
  changed, so it runs 1 + (codes replaced) passes, not one per position, with the very same result.
  `literal=True` runs the paper's loop as written, one prior pass per position (h * w passes): the
  same codes, kept to measure what the paper's method costs (benchmarks/test_bench_restoration.py).
- `restore_parallel`: edgead's. One prior pass scores every position at once; every flagged code
  is replaced together; repeated at most `passes` times, stopping early once nothing is flagged.

Replacements are drawn from the code's conditional distribution restricted to codes the prior
finds likely (p >= eta), by the Gumbel-max trick with noise from one generator per image, seeded
with (seed, hash of the image's original code grid): an image's restoration depends on its own
codes and the seed only — not on its batch, its position in it, or the run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Prior = Callable[[np.ndarray], np.ndarray]
RESAMPLE = ("sample", "argmax")


@dataclass
class Restored:
    """Restored codes (N, h, w) int64, which codes changed (N, h, w) bool, and prior passes per image (N,)."""

    codes: np.ndarray
    changed: np.ndarray
    passes: np.ndarray


def image_generators(codes: np.ndarray, seed: int) -> list[np.random.Generator]:
    """One generator per image, seeded with (seed, 64-bit hash of its code grid)."""
    gens = []
    for grid in codes:
        digest = hashlib.blake2b(np.ascontiguousarray(grid, dtype="<i8").tobytes(), digest_size=8).digest()
        gens.append(np.random.default_rng([seed, int.from_bytes(digest, "little")]))
    return gens


def code_log_likelihood(log_probs: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """(N, h, w, K) log-probabilities, (N, h, w) codes -> (N, h, w) log p of each code."""
    return np.take_along_axis(log_probs, codes[..., None], axis=-1)[..., 0]


def unlikely(own: np.ndarray, log_eta: float) -> np.ndarray:
    """(N, h, w) code log-likelihoods -> (N, h, w) bool: below eta, and so is a lower-half neighbour (local constraint)."""
    below = own < log_eta
    neighbour = np.full(own.shape, np.inf, dtype=np.float64)
    neighbour[:, :, :-1] = own[:, :, 1:]  # right
    neighbour[:, :-1, 1:] = np.minimum(neighbour[:, :-1, 1:], own[:, 1:, :-1])  # below left
    neighbour[:, :-1, :] = np.minimum(neighbour[:, :-1, :], own[:, 1:, :])  # below
    neighbour[:, :-1, :-1] = np.minimum(neighbour[:, :-1, :-1], own[:, 1:, 1:])  # below right
    neighbour[:, -1, -1] = own[:, -1, -1]  # no lower-half neighbour: its own likelihood decides
    return below & (neighbour < log_eta)


def draw(log_probs: np.ndarray, log_eta: float, rng: np.random.Generator, resample: str) -> np.ndarray:
    """(M, K) conditional log-probabilities -> (M,) new codes: a draw among the likely codes (p >= eta), or the most likely."""
    if resample == "argmax":
        return log_probs.argmax(axis=-1)
    noise = rng.gumbel(size=log_probs.shape)
    likely = log_probs >= log_eta
    keys = np.where(likely, log_probs + noise, -np.inf)
    keys[~likely.any(axis=-1)] = log_probs[~likely.any(axis=-1)]  # nothing is likely: take the most probable code
    return keys.argmax(axis=-1)


def restore_parallel(codes: np.ndarray, prior: Prior, eta: float, passes: int, seed: int = 0, resample: str = "sample") -> Restored:
    """At most `passes` prior passes; each replaces every flagged code at once (N, h, w) int64."""
    log_eta = float(np.log(eta))
    restored = np.array(codes, dtype=np.int64, copy=True)
    n, h, w = restored.shape
    rngs = image_generators(restored, seed)
    count = np.zeros(n, dtype=np.int64)
    active = np.arange(n)
    for _ in range(passes):
        log_probs = prior(restored[active])
        count[active] += 1
        flags = unlikely(code_log_likelihood(log_probs, restored[active]), log_eta)
        for row, image in enumerate(active):
            where = np.flatnonzero(flags[row])
            if where.size:
                grid = restored[image].reshape(-1)
                grid[where] = draw(log_probs[row].reshape(h * w, -1)[where], log_eta, rngs[image], resample)
        active = active[flags.reshape(len(active), -1).any(axis=1)]  # an image with nothing flagged is final
        if not active.size:
            break
    return Restored(restored, restored != codes, count)


def restore_exact(codes: np.ndarray, prior: Prior, eta: float, seed: int = 0, resample: str = "sample", literal: bool = False) -> Restored:
    """Raster order, each decision conditioned on the codes before it as restored so far (the paper's method).

    Images advance in lockstep: after each replacement, the prior runs again (batched) for the
    images that changed, and each resumes at the position after its last replacement.
    """
    if literal:
        return _restore_exact_literal(codes, prior, eta, seed, resample)
    log_eta = float(np.log(eta))
    restored = np.array(codes, dtype=np.int64, copy=True)
    n, h, w = restored.shape
    positions = h * w
    rngs = image_generators(restored, seed)
    count = np.zeros(n, dtype=np.int64)
    cursor = np.zeros(n, dtype=np.int64)
    active = np.arange(n)
    while active.size:
        log_probs = prior(restored[active])
        count[active] += 1
        flags = unlikely(code_log_likelihood(log_probs, restored[active]), log_eta).reshape(len(active), -1)
        moved = []
        for row, image in enumerate(active):
            later = np.flatnonzero(flags[row, cursor[image]:])
            if not later.size:
                continue  # every later decision is already made on an up-to-date pass: nothing more changes
            at = int(cursor[image] + later[0])
            grid = restored[image].reshape(-1)
            grid[at] = draw(log_probs[row].reshape(positions, -1)[at : at + 1], log_eta, rngs[image], resample)[0]
            cursor[image] = at + 1
            if at + 1 < positions:
                moved.append(image)
        active = np.array(moved, dtype=np.int64)
    return Restored(restored, restored != codes, count)


def _restore_exact_literal(codes: np.ndarray, prior: Prior, eta: float, seed: int, resample: str) -> Restored:
    """The paper's loop as written: at every position in raster order, a prior pass, then the decision there."""
    log_eta = float(np.log(eta))
    restored = np.array(codes, dtype=np.int64, copy=True)
    n, h, w = restored.shape
    rngs = image_generators(restored, seed)
    flat = restored.reshape(n, h * w)
    for at in range(h * w):
        log_probs = prior(restored)
        flags = unlikely(code_log_likelihood(log_probs, restored), log_eta).reshape(n, -1)
        for image in np.flatnonzero(flags[:, at]):
            flat[image, at] = draw(log_probs[image].reshape(h * w, -1)[at : at + 1], log_eta, rngs[image], resample)[0]
    return Restored(restored, restored != codes, np.full(n, h * w, dtype=np.int64))
