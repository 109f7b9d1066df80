"""Adopt a decision threshold measured on labelled data: F1-max, written into the model atomically."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np

from edgead.artifact import Artifact, write_artifact


def adopt_threshold(artifact: Artifact, f1_threshold: float, data_dir: str, f1: float, out: Path | None = None,
                    engine: dict | None = None) -> float:
    """Store the F1-max threshold of `data_dir` as the threshold of the engine it was measured with; returns the value.

    `engine`: the evaluated engine's manifest entry. Where that engine has its own threshold (export
    calibrates each), the adopted value replaces it there; otherwise it becomes the model's threshold.
    F1-max counts score >= t as anomalous and the runtime counts score > threshold, so the stored value
    is the largest float below t: both agree on every score.
    """
    value = float(np.nextafter(f1_threshold, -np.inf))
    manifest = copy.deepcopy(artifact.manifest)
    post = manifest["postprocess"]
    member = (engine or {}).get("member")
    own = next((e for e in manifest.get("engines", []) if member and e.get("member") == member and "threshold" in e), None)
    if own is not None:
        own.setdefault("calibrated_threshold", own["threshold"])
        own["threshold"] = value
        holder = own
    else:
        post.setdefault("holdout_threshold", post["image_threshold"])  # the calibrated one stays on record
        post["image_threshold"] = value
        holder = post
    holder["threshold_source"] = {
        "rule": "f1_max",
        "data": str(data_dir),
        "f1": f1,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_artifact(out or artifact.path, manifest, dict(artifact.members))
    return value
