"""The training code's modules behind the runtime's interfaces: the reference for parity, and scoring at training time.

Calibration at training time scores good images through the runtime's own Predictor (prepare,
head, maps) with these eager backends in place of engines, so that a threshold is set on exactly
the numbers the deployed path will produce.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgead.artifact import Artifact
from edgead.config import NuisanceConfig
from edgead.progress import Progress, silent_progress
from edgead.runtime.backends.base import Backend
from edgead.runtime.calibration import DEFAULT_FALSE_ALARM_RATE, DEFAULT_FOLDS, postprocess_section
from edgead.runtime.crossval import ImageOutputs, collect_outputs, image_scorer, version_fold_scores
from edgead.runtime.images import read_image
from edgead.runtime.nuisance import with_copies
from edgead.runtime.predictor import Predictor

log = logging.getLogger(__name__)


class EagerBackend(Backend):
    """One graph's torch module, run on the CPU in FP32, behind the Backend interface."""

    name = "eager-torch"

    def __init__(self, artifact: Artifact, module: torch.nn.Module, device: str = "cpu") -> None:
        super().__init__(artifact, {"precision": "fp32"}, device)
        self.module = module.eval()

    def infer(self, inputs: np.ndarray) -> np.ndarray | tuple[np.ndarray, ...]:
        with torch.inference_mode():
            outputs = self.module(torch.from_numpy(np.ascontiguousarray(inputs)).to(self.device))
        if isinstance(outputs, (tuple, list)):
            return tuple(o.float().cpu().numpy() if o.is_floating_point() else o.cpu().numpy() for o in outputs)
        return outputs.float().cpu().numpy() if outputs.is_floating_point() else outputs.cpu().numpy()


def eager_backends(artifact: Artifact, graphs: Mapping[str, torch.nn.Module]) -> dict[str, Backend]:
    """An EagerBackend per graph name."""
    return {name: EagerBackend(artifact, module) for name, module in graphs.items()}


def score_good_images(
    manifest: dict[str, Any],
    members: dict[str, bytes],
    graphs: Mapping[str, torch.nn.Module],
    paths: Sequence[str | Path],
    progress: Progress = silent_progress,
    label: str = "calibrate",
    batch_size: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """Image scores (N,) and every map pixel (flattened) of `paths`, scored as deployed with the eager modules.

    `manifest` needs everything but the threshold; the Predictor is given an infinite one.
    """
    artifact = Artifact(Path("<training>"), manifest, members)
    scores, pixels = [], []
    with Predictor(artifact, eager_backends(artifact, graphs), threshold=float("inf")) as predictor:
        with progress(label, len(paths)) as advance:
            for start in range(0, len(paths), batch_size):
                images = [read_image(p) for p in paths[start : start + batch_size]]
                for prediction in predictor.predict(images):
                    scores.append(prediction.score)
                    pixels.append(prediction.anomaly_map.ravel())
                advance(len(images))
    return np.array(scores, dtype=np.float64), np.concatenate(pixels)


def calibrate_good_images(
    manifest: dict[str, Any],
    members: dict[str, bytes],
    graphs: Mapping[str, torch.nn.Module],
    bank_paths: Sequence[str | Path],
    holdout_paths: Sequence[str | Path],
    config: Any,
    progress: Progress = silent_progress,
    outputs: Sequence[Sequence[ImageOutputs]] | None = None,
) -> dict[str, Any]:
    """The manifest's threshold and calibration (merged into `postprocess`) for any detector, scored as deployed.

    bank_paths: the good images the model was fitted on; holdout_paths: good images kept out of it.
    `config` gives false_alarm_rate, folds, seed and nuisance (detectors without those fields get the defaults, no copies).
    `outputs`: per image of bank_paths, the main graph's outputs of the image and of its nuisance copies (in that
    order), where training already computed them.

    Where the head refits per fold (`Head.refits_per_fold`: the kNN head builds each fold's bank from the
    other folds' features), every fitted image is scored by a model built without its fold: k-fold
    cross-calibration, no image held out. A learned head cannot be refitted without retraining k times;
    its fallback is the held-out images scored by the whole model, and with none held out the fitted
    images themselves, in-sample: optimistic scores, a low threshold, recorded and warned as such.
    With nuisance copies (`config.nuisance`), every scored image's copies are scored too — by the same
    fold model, which has seen neither the image nor its copies — and join the scores: the threshold is
    set for frames as a camera delivers them, not for lossless crops alone. Fold models hold the other folds' images and
    their bank copies (`nuisance.bank`, at `nuisance.share`), as the deployed bank does; the other copies are scored only.
    """
    rate = float(getattr(config, "false_alarm_rate", DEFAULT_FALSE_ALARM_RATE))
    folds = int(getattr(config, "folds", DEFAULT_FOLDS))
    seed = int(getattr(config, "seed", 0))
    nuisance = getattr(config, "nuisance", NuisanceConfig(copies=0))
    artifact = Artifact(Path("<training>"), manifest, members)
    medians: list[float] = []
    with Predictor(artifact, eager_backends(artifact, graphs), threshold=float("inf")) as predictor:
        if predictor.scoring_head.refits_per_fold and len(bank_paths) >= 2:
            if outputs is None:
                outputs = []
                for index, path in enumerate(bank_paths):
                    versions = [image for _, _, image in with_copies([read_image(path)], nuisance, seed, index)]
                    outputs.append(collect_outputs(predictor, versions))
            score = image_scorer(predictor, [versions[0].layout for versions in outputs], medians)
            scores = version_fold_scores(predictor.scoring_head, score, [[v.outputs for v in versions] for versions in outputs], folds, seed,
                                         progress=progress, bank_versions=1 + nuisance.bank_copies, copy_share=nuisance.share)
            used_folds = folds
        else:
            scores, used_folds = [], 1 if holdout_paths else 0
            if not holdout_paths:
                log.warning("the %s head cannot be cross-calibrated and no good images were held out: the threshold comes from the "
                            "training images' own scores, which are optimistic (expect more false alarms than %g); hold some out "
                            "(--holdout 0.2)", predictor.scoring_head.name, rate)
        scored = list(holdout_paths) if used_folds else list(bank_paths)
        offset = len(bank_paths) if used_folds else 0  # held-out images' copies differ from the bank images' copies
        with progress("calibrate", len(scored) * (1 + nuisance.copies)) as advance:
            for index, path in enumerate(scored):  # held out (or, in-sample, fitted) images: scored by the whole model, as deployed
                for _, _, image in with_copies([read_image(path)], nuisance, seed, offset + index):
                    prediction = predictor.predict([image])[0]
                    scores.append(prediction.score)
                    medians.append(float(np.median(prediction.anomaly_map)))
                    advance(1)
    section = postprocess_section(scores, rate, used_folds, "eager/fp32", float(np.median(medians)), len(holdout_paths))
    if nuisance.active:
        section["calibration"]["nuisance"] = {"copies": nuisance.copies, "scores": "the good images and their nuisance copies"}
    return section
