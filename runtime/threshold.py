"""Adopt a decision threshold measured on labelled data: F1-max, written into the model atomically."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np

from edgead.artifact import Artifact, write_artifact


def adopt_threshold(artifact: Artifact, f1_threshold: float, data_dir: str, f1: float, out: Path | None = None) -> float:
    """Store the F1-max threshold of `data_dir` as the model's image threshold; returns the stored value.

    F1-max counts score >= t as anomalous and the runtime counts score > threshold, so the stored value
    is the largest float below t: both agree on every score.
    """
    value = float(np.nextafter(f1_threshold, -np.inf))
    manifest = copy.deepcopy(artifact.manifest)
    post = manifest["postprocess"]
    post.setdefault("holdout_threshold", post["image_threshold"])  # the calibrated one stays on record
    post["image_threshold"] = value
    post["threshold_source"] = {
        "rule": "f1_max",
        "data": str(data_dir),
        "f1": f1,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_artifact(out or artifact.path, manifest, dict(artifact.members))
    return value
