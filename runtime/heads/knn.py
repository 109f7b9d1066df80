"""The kNN memory-bank head (PatchCore, patch-wise auto-encoder): distance of each patch feature to its nearest normal ones."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from edgead.artifact import Artifact, require_keys
from edgead.errors import ArtifactError, EdgeADError
from edgead.progress import Progress, silent_progress
from edgead.runtime.coreset import StreamingCoreset, coreset_target
from edgead.runtime.crossval import fold_ids
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

    refits_per_fold = True  # a fold's model is a bank subsampled from the other folds' features

    def fold_scores(
        self,
        reference: Sequence[Mapping[str, np.ndarray]],
        image_score: Callable[[int, np.ndarray], float],
        folds: int,
        seed: int,
        queries: Sequence[Mapping[str, np.ndarray]] | None = None,
        progress: Progress = silent_progress,
        base_bank: np.ndarray | None = None,
        base_seen: int = 0,
        base_copy_rows: int = 0,
        cache: dict | None = None,
        copies: Sequence[Mapping[str, np.ndarray]] | None = None,
        copy_fraction: float | None = None,
    ) -> np.ndarray:
        """Each fold scored against a bank subsampled, with the model's coreset rule, from the other folds' features.

        Features are extracted once, and subsampled once: each fold's features go through their own
        streaming coreset, and a fold's bank is the union of the other folds' coresets (a union of
        coresets of the parts is a coreset of the whole, with the largest of their radii). That costs
        one coreset pass over all features, not one per fold; the union is a little more redundant than
        a coreset of the pool, so fold scores run a little higher (a conservative threshold).
        `base_bank` (M, C) joins every fold bank, counted as `base_seen` features seen (enroll: the bank
        before new images), `base_copy_rows` of its rows beyond the coreset rule (its nuisance copies' own share).
        `cache`: fold banks kept between calls on the same reference, folds and seed (export: one set for all engines). `copies` (per image, its bank copies' outputs) with `copy_fraction`: each
        fold's copies go through a coreset of that fraction of their own and join the fold bank, as at training.
        """
        reference = [r[self.output] for r in reference]
        scored = reference if queries is None else [q[self.output] for q in queries]
        ids = fold_ids(len(reference), folds, seed)
        n_folds = int(ids.max()) + 1
        banks = None if cache is None else cache.get((folds, seed))
        if banks is None:
            banks = self._fold_banks(reference, ids, n_folds, base_bank, base_seen, progress, base_copy_rows)
            if copies is not None and copy_fraction:
                banks = self._with_fold_copies(banks, [c[self.output] for c in copies], ids, n_folds, float(copy_fraction), progress)
            if cache is not None:
                cache[(folds, seed)] = banks
        scores = np.empty(len(reference), dtype=np.float64)
        with progress("cross-calibrate", len(reference)) as advance:
            for fold in range(n_folds):
                for i in np.flatnonzero(ids == fold):
                    scores[i] = image_score(int(i), patch_scores(scored[i], banks[fold]))
                    advance(1)
        return scores

    def _fold_banks(self, reference: Sequence[np.ndarray], ids: np.ndarray, n_folds: int, base_bank: np.ndarray | None,
                    base_seen: int, progress: Progress, base_copy_rows: int = 0) -> list[MemoryBank]:
        """Per fold, the bank without it: `base_bank` plus the other folds' coresets, each fold subsampled once."""
        info = self.artifact.manifest["memory_bank"]
        settings = self._coreset_settings()
        rows = [_rows(features) for features in reference]
        fold_rows = np.array([sum(rows[i].shape[0] for i in np.flatnonzero(ids == fold)) for fold in range(n_folds)])
        others = int(round(fold_rows.sum() - fold_rows.mean())) if n_folds > 1 else int(fold_rows.sum())
        base = 0 if base_bank is None else int(base_bank.shape[0])
        # the share of new rows a fold bank keeps: the model's rule on (base + others) features, less the base bank
        budget = coreset_target(settings, base_seen + others) + base_copy_rows - base
        fraction = float(np.clip(budget / max(1, others), 1e-9, 1.0))
        coresets = self._fold_coresets(rows, ids, n_folds, fraction, int(settings["projection_dim"]), int(settings["seed"]),
                                       "fold coresets", progress)
        head = [] if base_bank is None else [np.asarray(base_bank, np.float16)]
        return [MemoryBank(np.concatenate(head + [c for j, c in enumerate(coresets) if j != fold]), k=int(info["k"]))
                for fold in range(n_folds)]

    def _fold_coresets(self, rows: Sequence[np.ndarray], ids: np.ndarray, n_folds: int, fraction: float, projection_dim: int,
                       seed: int, label: str, progress: Progress) -> list[np.ndarray]:
        """Per fold, the coreset (`fraction` of its rows, fp16) of its members' rows; all of them at a fraction of 1."""
        coresets = []
        with progress(label, sum(r.shape[0] for r in rows)) as advance:
            for fold in range(n_folds):
                members = np.flatnonzero(ids == fold)
                if fraction >= 1.0:
                    coresets.append(np.concatenate([rows[i] for i in members]).astype(np.float16))
                    advance(sum(rows[i].shape[0] for i in members))
                    continue
                sampler = StreamingCoreset(fraction, rows[0].shape[1], projection_dim, seed + fold, device=self.coreset_device, progress=advance)
                for i in members:
                    sampler.add(rows[i])
                coresets.append(sampler.finish().features.astype(np.float16))
        return coresets

    def _with_fold_copies(self, banks: list[MemoryBank], copies: Sequence[np.ndarray], ids: np.ndarray, n_folds: int,
                          fraction: float, progress: Progress) -> list[MemoryBank]:
        """Each fold bank joined by the other folds' copy coresets (`fraction` of their rows, subsampled per fold)."""
        settings = self._coreset_settings()
        coresets = self._fold_coresets([_rows(features) for features in copies], ids, n_folds, min(1.0, fraction),
                                       int(settings["projection_dim"]), int(settings["seed"]) + n_folds, "fold coresets of the copies", progress)
        return [MemoryBank(np.concatenate([np.asarray(bank.features, np.float16)] + [c for j, c in enumerate(coresets) if j != fold]), k=bank.k)
                for fold, bank in enumerate(banks)]

    def _coreset_settings(self) -> dict:
        """The bank's coreset rule as stored; models without one kept every feature."""
        return self.artifact.manifest["memory_bank"].get("coreset") or {"fraction": 1.0, "projection_dim": 64, "seed": 0}

    @property
    def coreset_device(self) -> str:
        """Where fold coresets run: the GPU (CuPy) when the bank is there, else the CPU."""
        return "cuda" if self.bank.device == "cuda" else "cpu"

    def describe(self) -> str:
        return f"knn ({self.bank.count} x {self.bank.dim}, k={self.bank.k}, {self.bank.device})"


def _rows(features: np.ndarray) -> np.ndarray:
    """(T, C, h, w) -> (T*h*w, C)."""
    return features.transpose(0, 2, 3, 1).reshape(-1, features.shape[1])


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
