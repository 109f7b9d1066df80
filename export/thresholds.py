"""A threshold per engine: cross-calibration of good images through the engine's own outputs, at export.

An FP16 or INT8 engine's outputs differ from FP32's by more than its parity tolerance suggests for the
tail of the score distribution: keeping the FP32 threshold moves its false-alarm rate. Each engine's
good-image scores are measured the way training measured FP32's — every image by a model refitted
without its fold (for the kNN head: fold banks from the FP32 reference's features, as the deployed
bank is; the engine's own features scored against them) — and its threshold set for the model's
false-alarm rate.

A head that cannot be refitted per fold (`Head.refits_per_fold` False: a learned model) cannot be
cross-calibrated without retraining; its engine's threshold is the model's, moved by the median
difference between the engine's and the FP32 reference's scores of the same good images (what the
reduced precision adds to every score), and recorded as such.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgead.runtime.calibration import Calibration, ThresholdChoice
from edgead.config import NO_NUISANCE, NuisanceConfig
from edgead.runtime.crossval import ImageOutputs, collect_outputs, image_scorer, version_fold_scores
from edgead.runtime.images import find_images, read_image
from edgead.runtime.nuisance import copies as nuisance_copies
from edgead.runtime.predictor import Predictor


MAX_IMAGES = 256


@dataclass
class GoodImages:
    """Good images to calibrate engines with, and where they came from (for the manifest and the user).

    The first `fitted` are the images the model was fitted on (cross-calibrated, as at training); the
    rest were never part of it (held out at training, or --calib DIR) and are scored by the whole model.
    """

    images: list[np.ndarray]
    origin: str
    fitted: int = 0
    copies: list[list[np.ndarray]] = field(default_factory=list)  # per image, its nuisance copies (as at training), or none


def good_images(manifest: dict[str, Any], calib_dir: str | None) -> GoodImages | None:
    """--calib DIR's images; else the training images the manifest lists, where all are on this machine; else None."""
    fitted = 0
    training = manifest.get("training", {})
    root, names = training.get("images_dir"), training.get("images")
    listed = [Path(root) / name for name in names] if root and names else []
    if calib_dir and {p.resolve() for p in find_images(calib_dir)} == {p.resolve() for p in listed}:
        calib_dir = None  # the training images themselves: split as at training
    if calib_dir:  # images the model never saw: each scored by the whole model
        paths = find_images(calib_dir)
        origin = f"{len(paths)} good images of {calib_dir}"
        if len(paths) > MAX_IMAGES:
            paths = [paths[i] for i in np.linspace(0, len(paths) - 1, MAX_IMAGES).round().astype(int)]
    else:  # the training images, split as at training: the bank's (cross-calibrated), then the held-out ones
        if not listed:
            return None
        paths = listed
        if not all(p.is_file() for p in paths):
            return None  # another set than the training images would calibrate another model: ask for --calib
        fitted = int(training.get("bank_images", len(paths)))
        origin = f"the {len(paths)} training images"
    images = [read_image(path) for path in paths]  # DataError names an unreadable one
    if len(images) < 2:
        return None
    # the copies training scored (image i of the training list is image i there: the bank's first, then the held-out ones)
    config = manifest.get("config", {})
    nuisance = NuisanceConfig.of(config.get("nuisance", NO_NUISANCE))
    copies = [nuisance_copies(image, nuisance, int(config.get("seed", 0)), index) for index, image in enumerate(images)]
    if nuisance.active:
        origin += f" and {nuisance.copies} nuisance copies of each"
    return GoodImages(images, origin, fitted, copies)


@dataclass
class Reference:
    """The good images and the FP32 reference's outputs for them (the fold models are refitted from these), once per export."""

    good: GoodImages
    outputs: list[ImageOutputs]
    fold_models: dict = field(default_factory=dict)  # built once, from these outputs, for every engine
    copy_outputs: list[list[ImageOutputs]] = field(default_factory=list)  # per image, its copies' outputs


def reference_outputs(reference: Predictor, good: GoodImages) -> Reference:
    return Reference(good, collect_outputs(reference, good.images), copy_outputs=_copy_outputs(reference, good))


def _copy_outputs(predictor: Predictor, good: GoodImages) -> list[list[ImageOutputs]]:
    return [collect_outputs(predictor, copies) for copies in good.copies] if any(good.copies) else []


def calibrate_engine(engine: Predictor, reference: Reference, manifest: dict[str, Any], name: str) -> dict[str, Any]:
    """The engine's calibration section: its own cross-calibrated scores, tail and threshold at the model's false-alarm rate.

    Raises ConfigError where the model's head cannot be refitted from engine outputs.
    """
    model = manifest["postprocess"]["calibration"]
    rate = float(model["false_alarm_rate"])
    queries = collect_outputs(engine, reference.good.images)
    copy_queries = _copy_outputs(engine, reference.good)
    score = image_scorer(engine, [item.layout for item in reference.outputs])
    fitted = reference.good.fitted
    if not engine.scoring_head.refits_per_fold or fitted == 1:
        return _shifted(engine, reference, queries, score, manifest, name)
    seed = int(manifest.get("config", {}).get("seed", 0))
    nuisance = NuisanceConfig.of(manifest.get("config", {}).get("nuisance", NO_NUISANCE))  # which copies the bank holds
    folds = int(model["folds"]) if fitted else 1
    scores = []
    if fitted and copy_queries:  # as at training: each image and its copies in one fold, the other folds' images and copies the bank
        scores += version_fold_scores(engine.scoring_head, score, [_versions(reference, i) for i in range(fitted)], folds, seed,
                                      queries=[[q.outputs for q in [queries[i], *copy_queries[i]]] for i in range(fitted)],
                                      cache=reference.fold_models, bank_versions=1 + nuisance.bank_copies, copy_share=nuisance.share)
    elif fitted:  # as at training: fold banks from the FP32 reference's features, each fold's own outputs scored against them
        scores += list(engine.scoring_head.fold_scores([item.outputs for item in reference.outputs[:fitted]], score, folds, seed,
                                                       queries=[item.outputs for item in queries[:fitted]], cache=reference.fold_models))
    for i in range(fitted, len(queries)):  # never in the model: the whole of it, on the image and its copies
        scores += [score(i, engine.head(q.outputs)) for q in [queries[i], *(copy_queries[i] if copy_queries else [])]]
    calibration = Calibration.fit(scores, folds, name)
    section = calibration.to_manifest(calibration.threshold(rate))
    section["images_from"] = reference.good.origin
    if copy_queries:
        section["nuisance"] = {"copies": len(copy_queries[0]), "scores": "the good images and their nuisance copies"}
    return section


def _versions(reference: Reference, i: int) -> list[dict[str, np.ndarray]]:
    """Image i's reference outputs, then its copies'."""
    return [item.outputs for item in [reference.outputs[i], *(reference.copy_outputs[i] if reference.copy_outputs else [])]]


def _shifted(engine: Predictor, reference: Reference, queries: list[ImageOutputs], score, manifest: dict[str, Any], name: str) -> dict[str, Any]:
    """For a head that cannot refit: the model's calibration moved by the median engine-minus-FP32 score of the good images."""
    model = manifest["postprocess"]["calibration"]
    own = np.array([score(i, engine.head(item.outputs)) for i, item in enumerate(queries)])
    fp32 = np.array([score(i, engine.head(item.outputs)) for i, item in enumerate(reference.outputs)])
    shift = float(np.median(own - fp32))
    calibration = Calibration.fit(np.asarray(model["scores"]) + shift, int(model.get("folds", 0)), name)
    choice = calibration.threshold(float(model["false_alarm_rate"]))
    value = float(manifest["postprocess"]["image_threshold"]) + shift  # the model's threshold, wherever it came from, moved
    section = calibration.to_manifest(ThresholdChoice(value, choice.rate, choice.extrapolated, choice.note))
    section.update(images_from=reference.good.origin, method=f"the model's calibration shifted by {shift:+.4f}: the median "
                   f"difference between this engine's and the FP32 scores of the same good images (the head cannot refit per fold)")
    return section
