"""Enroll new good images on the device: their patch features join the bank, re-subsampled; no engine rebuild."""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgead.artifact import npy_bytes, write_artifact
from edgead.errors import ConfigError
from edgead.progress import Progress, silent_progress
from edgead.runtime.coreset import greedy_coreset
from edgead.runtime.heads.knn import KnnHead
from edgead.runtime.images import read_image
from edgead.runtime.predictor import Predictor


def coreset_target(settings: dict[str, Any], n_features: int) -> int:
    """Bank size for `n_features` under the manifest's `memory_bank.coreset` (a fraction or a count)."""
    if settings.get("count") is not None:
        return min(int(settings["count"]), n_features)
    return max(1, min(n_features, round(float(settings["fraction"]) * n_features)))


def enroll_images(
    predictor: Predictor, paths: Sequence[Path], out: Path, batch_size: int = 8, progress: Progress = silent_progress
) -> dict[str, Any]:
    """Add the patch features of `paths` to the bank of `predictor`'s artifact and write it to `out` atomically.

    The old bank and the new features are subsampled together with the model's own coreset
    setting (a fraction of every patch feature seen so far, or a fixed count). The threshold is
    kept: it was calibrated on held-out images, which enrolling does not change.
    """
    artifact = predictor.artifact
    head = predictor.scoring_head
    if not isinstance(head, KnnHead):
        raise ConfigError(
            f"enroll adds good images to a memory bank; {artifact.path} ({artifact.manifest['method']}) scores with "
            f"the {head.name} head and has none: retrain it with the new good images instead"
        )
    manifest = copy.deepcopy(artifact.manifest)
    settings = manifest["memory_bank"]["coreset"]
    chunks = []
    with progress("features", len(paths)) as advance:
        for start in range(0, len(paths), batch_size):
            batch = [read_image(p) for p in paths[start : start + batch_size]]
            features = predictor.infer(predictor.prepare(batch))[head.output]  # tiles, when the model is tiled
            chunks.append(features.transpose(0, 2, 3, 1).reshape(-1, features.shape[1]))
            advance(len(batch))
    new = np.concatenate(chunks).astype(np.float32)
    old = head.bank.features.astype(np.float32)
    combined = np.concatenate([old, new])
    seen = int(manifest["memory_bank"].get("patch_features_seen", old.shape[0])) + new.shape[0]
    target = min(coreset_target(settings, seen), combined.shape[0])
    with progress("coreset", target) as advance:
        coreset = greedy_coreset(combined, target, int(settings["projection_dim"]), int(settings["seed"]), advance)
    bank = combined[coreset.indices].astype(np.float16)
    members = dict(artifact.members)
    members[manifest["memory_bank"]["member"]] = npy_bytes(bank)
    kept_new = int((coreset.indices >= old.shape[0]).sum())
    manifest["memory_bank"].update(count=int(bank.shape[0]), coreset_radius=coreset.radius, patch_features_seen=seen)
    manifest.setdefault("enrolled", []).append(
        {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "images": len(paths), "features_kept": kept_new}
    )
    write_artifact(out, manifest, members)
    return {"images": len(paths), "bank_before": old.shape[0], "bank_after": int(bank.shape[0]), "new_features_kept": kept_new, "radius": coreset.radius}
