"""Calibration of the restoration detector at training: eta on masked good images (the paper's way), then the threshold.

eta is searched only for the restoration map; a likelihood map (`--anomaly-map likelihood`) resamples nothing.

The paper tunes eta by grid search on good images and copies of them with black or grey rectangles
of 1% of the image area, for the best AUROC. Here the held-out good images and two defective copies
of each are scored through the runtime's Predictor (eager modules, parallel restoration) for every
candidate eta; the best image AUROC wins, then the best pixel AUROC, then the smaller eta (fewer
codes resampled on good images). The threshold then comes from the held-out good images alone, for
the model's false-alarm rate (`--false-alarm-rate`; their largest scores' tail below 1/N).

The copies' defects (`--eta-defects`): the paper's `rectangles`; `cutpaste`, a piece of the image
itself, colour-jittered, rotated and pasted elsewhere (kit/cutpaste.py, at most 2% of the image or a
thin scar) — subtler than a black box, so the chosen eta has to catch defects that look like the
surface; or `mixed`, one copy of each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgead import metrics
from edgead.artifact import Artifact
from edgead.errors import ConfigError
from edgead.kit.vq_config import DEFECT_KINDS
from edgead.progress import Progress, silent_progress

ETA_CANDIDATES = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
MASKED_PER_IMAGE = 2
MASK_AREA = 0.01
CUTPASTE_MAX_AREA = 0.02


def masked_copies(images: list[np.ndarray], rng: np.random.Generator, per_image: int = MASKED_PER_IMAGE, area: float = MASK_AREA) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Copies of (H, W, 3) uint8 images with one black or grey rectangle of `area` of the image each, and their masks."""
    out, masks = [], []
    for image in images:
        height, width = image.shape[:2]
        for _ in range(per_image):
            aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
            rect_h = int(np.clip(round(np.sqrt(area * height * width * aspect)), 2, height))
            rect_w = int(np.clip(round(area * height * width / rect_h), 2, width))
            top, left = int(rng.integers(height - rect_h + 1)), int(rng.integers(width - rect_w + 1))
            copy = image.copy()
            copy[top : top + rect_h, left : left + rect_w] = 0 if rng.random() < 0.5 else 128
            mask = np.zeros((height, width), dtype=bool)
            mask[top : top + rect_h, left : left + rect_w] = True
            out.append(copy)
            masks.append(mask)
    return out, masks


def defective_copies(images: list[np.ndarray], rng: np.random.Generator, kind: str = "rectangles",
                     per_image: int = MASKED_PER_IMAGE) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """`per_image` copies of each image with one synthetic defect of `kind` (DEFECT_KINDS), and their masks."""
    from edgead.kit.cutpaste import CutPaste

    if kind not in DEFECT_KINDS:
        raise ConfigError(f"--eta-defects {kind!r}: choose one of {', '.join(DEFECT_KINDS)}")
    cutpaste = CutPaste(probability=1.0, shape="mixed", max_area=CUTPASTE_MAX_AREA)
    out, masks = [], []
    for image in images:
        for copy in range(per_image):
            if kind == "rectangles" or (kind == "mixed" and copy % 2 == 0):
                pasted, mask = masked_copies([image], rng, per_image=1)
                pasted, mask = pasted[0], mask[0]
            else:
                pasted, mask = cutpaste(image, rng)
            out.append(pasted)
            masks.append(mask)
    return out, masks


def _score(predictor: Any, images: list[np.ndarray], batch: int = 8) -> tuple[np.ndarray, list[np.ndarray]]:
    scores, maps = [], []
    for start in range(0, len(images), batch):
        for prediction in predictor.predict(images[start : start + batch]):
            scores.append(prediction.score)
            maps.append(prediction.anomaly_map)
    return np.array(scores), maps


def search_eta(artifact: Artifact, graphs: dict, good: list[np.ndarray], seed: int, progress: Progress = silent_progress,
               defects: str = "rectangles") -> dict[str, Any]:
    """The candidate eta with the best (image AUROC, pixel AUROC) on good images vs their defective copies; the table of all."""
    from edgead.kit.eager import eager_backends
    from edgead.runtime.predictor import Predictor

    masked, masks = defective_copies(good, np.random.default_rng(seed), defects)
    labels = np.r_[np.zeros(len(good)), np.ones(len(masked))]
    truth = np.stack([np.zeros(g.shape[:2], dtype=bool) for g in good] + masks)
    table = []
    with Predictor(artifact, eager_backends(artifact, graphs), threshold=float("inf"), head_options={"restoration": "parallel"}) as predictor:
        with progress("calibrate eta", len(ETA_CANDIDATES)) as advance:
            for eta in ETA_CANDIDATES:
                predictor.scoring_head.eta = eta
                scores, maps = _score(predictor, good + masked)
                table.append({
                    "eta": eta,
                    "image_auroc": metrics.roc_auc(labels, scores),
                    "pixel_auroc": metrics.roc_auc(truth, np.stack(maps)),
                    "good_score_mean": float(scores[: len(good)].mean()),
                })
                advance(1)
    best = max(table, key=lambda row: (round(row["image_auroc"], 9), round(row["pixel_auroc"], 9), -row["eta"]))
    return {"eta": best["eta"], "good": len(good), "masked": len(masked), "defects": defects, "image_auroc": best["image_auroc"], "pixel_auroc": best["pixel_auroc"], "table": table}


def calibrate_detector(trained: Any, holdout: list[np.ndarray], progress: Progress = silent_progress) -> None:
    """Set `trained.restoration` (eta, and how it was chosen) and `trained.calibration` (threshold) in place."""
    from edgead.kit.eager import calibrate_good_images

    config = trained.config
    if config.eta is None and config.anomaly_map == "restoration":
        manifest, members = trained.artifact_parts()
        manifest["postprocess"]["image_threshold"] = float("inf")
        found = search_eta(Artifact(Path("<training>"), manifest, members), trained.graphs, holdout, config.seed, progress, config.eta_defects)
        trained.restoration = {"eta": found["eta"], "eta_calibration": {k: v for k, v in found.items() if k != "eta"}}
    elif config.eta is not None:
        trained.restoration = {"eta": config.eta}
    else:  # a likelihood map restores nothing: no eta to choose (the manifest keeps its placeholder, unused)
        trained.restoration = {}
    manifest, members = trained.artifact_parts()
    trained.calibration = calibrate_good_images(manifest, members, trained.graphs, trained.fit_images, trained.holdout_images, config, progress)
