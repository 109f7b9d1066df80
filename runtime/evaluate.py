"""Evaluate the deployed path on a labelled test set: image and pixel metrics from the runtime's own outputs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from edgead import metrics
from edgead.errors import DataError
from edgead.progress import Progress, silent_progress
from edgead.runtime.calibration import SESSION_NOTE
from edgead.runtime.datasets import Dataset, Sample, load_mask
from edgead.runtime.images import read_image
from edgead.runtime.postprocess import resize_map
from edgead.runtime.predictor import Predictor


@dataclass
class EvalResult:
    """Metrics (a flat dict), per-defect-type image AUROC, and per-sample scores."""

    metrics: dict[str, float]
    per_type_auroc: dict[str, float]
    samples: list[Sample]
    scores: np.ndarray
    labels: np.ndarray
    notes: list[str] = field(default_factory=list)


def evaluate(
    predictor: Predictor,
    dataset: Dataset,
    batch_size: int = 8,
    progress: Progress = silent_progress,
    on_sample: Callable[[Sample, np.ndarray, float, np.ndarray, np.ndarray | None], None] | None = None,
) -> EvalResult:
    """Score every test sample; pixel metrics at the model input size (masks resized nearest-neighbour).

    `on_sample(sample, image, score, map_at_input, mask_at_input)` sees each sample (for reports).
    """
    samples = list(dataset.test)
    if not samples:
        raise DataError(f"{dataset.root} has no test images: eval needs test/good and test/<defect> folders")
    labels = np.array([s.label for s in samples], dtype=np.int64)
    if labels.min() == labels.max():
        raise DataError(f"{dataset.root}: eval needs both good and defective test images (found only label {labels[0]})")
    with_pixels = dataset.has_masks
    h, w = predictor.map_px
    scores = np.empty(len(samples), dtype=np.float64)
    maps = np.empty((len(samples), h, w), dtype=np.float32) if with_pixels else None
    masks = np.zeros((len(samples), h, w), dtype=bool) if with_pixels else None
    with progress("evaluate", len(samples)) as advance:
        for start in range(0, len(samples), batch_size):
            batch = samples[start : start + batch_size]
            images = [read_image(s.path) for s in batch]
            for offset, (sample, image, pred) in enumerate(zip(batch, images, predictor.predict(images))):
                i = start + offset
                scores[i] = pred.score
                mask = None
                if with_pixels:
                    maps[i] = resize_map(pred.anomaly_map, (h, w))  # tiled frames come at their own size
                    full = load_mask(sample, image.shape[:2])
                    mask = cv2.resize(full.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
                    masks[i] = mask
                if on_sample is not None:
                    on_sample(sample, image, pred.score, pred.anomaly_map, mask)
            advance(len(batch))
    result = {"image_auroc": metrics.roc_auc(labels, scores)}
    f1, f1_threshold = metrics.f1_max(labels, scores)
    result.update({"image_f1_max": f1, "image_f1_max_threshold": f1_threshold})
    # the runtime calls a score NG when it is above the threshold; f1_at counts score >= its argument
    result["image_f1_at_threshold"] = metrics.f1_at(labels, scores, float(np.nextafter(predictor.threshold, np.inf)))
    result["threshold"] = predictor.threshold
    notes = []
    # what the line would see at this threshold: good images stopped for nothing, defective images shipped
    flagged = scores > predictor.threshold
    good, bad = labels == 0, labels == 1
    result["false_alarm_rate"] = float(flagged[good].mean())
    choice = getattr(predictor, "threshold_choice", None)
    if choice is not None and choice.rate is not None:
        result["false_alarm_rate_target"] = float(choice.rate)  # asked for, or (a --threshold) what the calibration expects
    result["miss_rate"] = float((~flagged[bad]).mean())
    target = ""
    if choice is not None and choice.rate is not None:
        given = choice.note == SESSION_NOTE
        target = f", the calibration expects {choice.rate:.3g}" if given else f", calibrated for {choice.rate:g}"
    notes.append(
        f"at threshold {predictor.threshold:.4f}: {int(flagged[good].sum())} of {int(good.sum())} good test images flagged "
        f"(false-alarm rate {result['false_alarm_rate']:.3f}{target}), {int((~flagged[bad]).sum())} of {int(bad.sum())} defective images passed"
    )
    if with_pixels and masks.any():
        result["pixel_auroc"] = metrics.roc_auc(masks, maps)
        result["pixel_aupr"] = metrics.average_precision(masks, maps)
        result["aupro_0.3"] = metrics.aupro(masks, maps, fpr_limit=0.3)
    else:
        notes.append("no ground-truth masks: pixel AUROC, pixel AUPR and AUPRO were not computed")
    per_type = {}
    for defect_type in sorted({s.defect_type for s in samples if s.label == 1}):
        chosen = good | np.array([s.defect_type == defect_type for s in samples])
        per_type[defect_type] = metrics.roc_auc(labels[chosen], scores[chosen])
    return EvalResult(result, per_type, samples, scores, labels, notes)
