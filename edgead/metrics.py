"""Anomaly detection metrics: AUROC, AP, F1 and the MVTec AD AUPRO, exact and sort-based.

Pure numpy. One convention throughout: a sample (image or pixel) is predicted defective
when its score is >= the threshold, and every distinct score value is a threshold, so
ties are exact: AUROC equals the Mann-Whitney U statistic with ties counted as 1/2.
Labels are 0/1 or bool, 1 (True) meaning defective.
"""

from __future__ import annotations

import numpy as np

from edgead.errors import ConfigError, DataError

__all__ = ["aupro", "average_precision", "f1_at", "f1_max", "label_components", "roc_auc"]


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve; labels and scores of any equal shape, flattened."""
    pos, neg = _split(labels, scores, "AUROC")
    if pos.size == 0 or neg.size == 0:
        raise DataError(
            f"AUROC needs both good and defective samples; got {pos.size} defective and "
            f"{neg.size} good — evaluate on a test set that holds both"
        )
    # For each defective score: good scores below it count 1, equal ones 1/2.
    below = np.searchsorted(neg, pos, side="left").sum(dtype=np.int64)
    below_or_equal = np.searchsorted(neg, pos, side="right").sum(dtype=np.int64)
    return float((int(below) + int(below_or_equal)) / (2 * pos.size * neg.size))


def average_precision(labels, scores) -> float:
    """Step-wise average precision (as sklearn's average_precision_score), thresholds at distinct scores."""
    pos, neg = _split(labels, scores, "average precision")
    _need_defects(pos, "average precision")
    thresholds, n_at = _distinct(pos)
    tp, fp = _counts_at_or_above(pos, neg, thresholds)
    # Recall only changes at thresholds equal to some defective score: sum (delta recall) * precision.
    return float(np.sum(n_at / pos.size * (tp / (tp + fp))))


def f1_max(labels, scores) -> tuple[float, float]:
    """Best F1 over all thresholds and the threshold reaching it (the highest one on a tie)."""
    pos, neg = _split(labels, scores, "F1")
    _need_defects(pos, "F1")
    # Moving a threshold up to the next defective score never loses a true positive, so
    # the best F1 is reached at some defective score.
    thresholds, _ = _distinct(pos)
    tp, fp = _counts_at_or_above(pos, neg, thresholds)
    f1 = 2 * tp / (tp + fp + pos.size)
    best = f1.size - 1 - int(np.argmax(f1[::-1]))
    return float(f1[best]), float(thresholds[best])


def f1_at(labels, scores, threshold: float) -> float:
    """F1 of the prediction `score >= threshold` (the convention of f1_max)."""
    try:
        threshold = float(threshold)
    except (TypeError, ValueError):
        raise ConfigError(f"F1 threshold must be a number; got {threshold!r}") from None
    if np.isnan(threshold):
        raise ConfigError("F1 threshold is NaN — pass a number, e.g. the one f1_max returns")
    pos, neg = _split(labels, scores, "F1")
    _need_defects(pos, "F1")
    tp, fp = _counts_at_or_above(pos, neg, np.array([threshold]))
    return float(2 * tp[0] / (tp[0] + fp[0] + pos.size))


def aupro(masks, maps, fpr_limit: float = 0.3) -> float:
    """Normalised area under the per-region-overlap curve up to fpr_limit (MVTec AD, Bergmann et al.).

    masks: (N, H, W) bool ground truth, maps: (N, H, W) anomaly maps ((H, W) for one image).
    Regions are the 8-connected components of each mask. At threshold t, PRO is the mean
    over all regions of the fraction of the region's pixels with map >= t, FPR the fraction
    of good pixels with map >= t. The curve through every distinct threshold is integrated
    with the trapezoid rule from FPR 0 to fpr_limit and divided by fpr_limit (perfect = 1).
    """
    fpr_limit = float(fpr_limit)
    if not 0.0 < fpr_limit <= 1.0:
        raise ConfigError(f"AUPRO fpr_limit must be in (0, 1]; got {fpr_limit} — the usual value is 0.3")
    masks = _as_labels(masks, "AUPRO masks")
    maps = _as_scores(maps, "AUPRO maps")
    if masks.shape != maps.shape or masks.ndim not in (2, 3):
        raise DataError(
            f"AUPRO needs masks and maps of one shape (N, H, W); got masks {masks.shape} and maps "
            f"{maps.shape}"
        )
    if np.isnan(maps).any():
        raise DataError("AUPRO maps contain NaN — check the model output before evaluating")
    regions, n_regions = label_components(masks)
    good = np.sort(maps[~masks], axis=None)
    if n_regions == 0 or good.size == 0:
        raise DataError(
            f"AUPRO needs defect regions and good pixels; got {n_regions} regions and {good.size} good "
            "pixels — evaluate on a test set with both defective and good pixels"
        )
    # Each region pixel adds 1 / (region size * n_regions) to PRO once the threshold reaches it.
    region_ids, values = regions[masks], maps[masks]
    sizes = np.bincount(region_ids, minlength=n_regions + 1)
    order = np.argsort(values)[::-1]
    values = values[order]
    pro = np.cumsum(1.0 / (sizes[region_ids[order]] * float(n_regions)))
    pro /= pro[-1]  # the sum is 1 up to rounding; make it exact so PRO never exceeds 1
    last = np.flatnonzero(np.append(values[1:] != values[:-1], True))  # last pixel of each distinct value
    thresholds, pro_at = values[last], pro[last]
    pro_above = np.concatenate(([0.0], pro_at[:-1]))
    fpr_at = (good.size - np.searchsorted(good, thresholds, side="left")) / good.size
    fpr_above = (good.size - np.searchsorted(good, thresholds, side="right")) / good.size
    # Between two defect-pixel thresholds only good pixels enter, so the curve runs flat:
    # (fpr_above, pro_above) -> (fpr_at, pro_at) at each threshold is the whole curve.
    fpr = np.concatenate(([0.0], np.column_stack((fpr_above, fpr_at)).ravel(), [1.0]))
    pro = np.concatenate(([0.0], np.column_stack((pro_above, pro_at)).ravel(), [pro_at[-1]]))
    return _trapezoid_to(fpr, pro, fpr_limit) / fpr_limit


def label_components(mask) -> tuple[np.ndarray, int]:
    """8-connected components of a bool mask (H, W), or of each image of a stack (N, H, W).

    Returns int32 labels of the mask's shape (0 = background, 1..n numbered in raster order
    of each component's first pixel; components never span two images of a stack) and n.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim not in (2, 3):
        raise DataError(f"label_components needs a mask (H, W) or (N, H, W); got shape {mask.shape}")
    if mask.ndim == 3:  # one empty row after each image keeps images apart
        n_img, height, width = mask.shape
        padded = np.zeros((n_img, height + 1, width), dtype=bool)
        padded[:, :height] = mask
        labels, n = label_components(padded.reshape(n_img * (height + 1), width))
        return labels.reshape(n_img, height + 1, width)[:, :height], n
    height, width = mask.shape
    row_len = width + 2
    # Horizontal runs as [start, end) in the flat index of the mask padded by one column each side.
    padded = np.zeros((height, row_len), dtype=np.int8)
    padded[:, 1:-1] = mask
    step = np.diff(padded.ravel())
    starts = np.flatnonzero(step == 1) + 1
    ends = np.flatnonzero(step == -1) + 1
    labels = np.zeros(mask.shape, dtype=np.int32)
    if starts.size == 0:
        return labels, 0
    # Runs a (row r) and b (row r+1) touch in 8-connectivity iff start_b <= end_a and end_b >= start_a;
    # runs are raster-ordered, so the b of each a form one contiguous range [lo, hi).
    lo = np.searchsorted(ends, starts + row_len, side="left")
    hi = np.maximum(np.searchsorted(starts, ends + row_len, side="right"), lo)
    a = np.repeat(np.arange(starts.size), hi - lo)
    b = np.arange(a.size) - np.repeat(np.cumsum(hi - lo) - hi, hi - lo)
    parent = _union(starts.size, a, b)
    is_root = parent == np.arange(parent.size)
    run_label = (np.cumsum(is_root, dtype=np.int32))[parent]
    labels[mask] = np.repeat(run_label, ends - starts)  # run pixels in raster order = mask pixels in raster order
    return labels, int(is_root.sum())


def _union(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Root of each of n nodes joined by edges (a, b): the smallest node of its component."""
    parent = np.arange(n)
    while True:
        pa, pb = parent[a], parent[b]
        differ = pa != pb
        if not differ.any():
            return parent
        pa, pb = pa[differ], pb[differ]
        # Hook the larger root under the smaller one; any winner among duplicates is fine
        # since parent[i] <= i always holds, so no cycle can form. O(log n) rounds.
        parent[np.maximum(pa, pb)] = np.minimum(pa, pb)
        while True:  # pointer jumping until every node points at its root
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
        a, b = a[differ], b[differ]


def _trapezoid_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid area under the polyline (x, y), x non-decreasing, from x[0] to x_max (interpolated)."""
    inside = int(np.searchsorted(x, x_max, side="right"))
    x, y, x_next, y_next = x[:inside], y[:inside], x[inside:inside + 1], y[inside:inside + 1]
    if x_next.size and x[-1] < x_max:
        y_end = y[-1] + (y_next[0] - y[-1]) * (x_max - x[-1]) / (x_next[0] - x[-1])
        x, y = np.append(x, x_max), np.append(y, y_end)
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


def _as_labels(labels, name: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype == bool:
        return labels
    if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)):
        raise DataError(f"{name} must be 0/1 or bool; got dtype {labels.dtype}")
    is_defect = labels == 1
    if np.count_nonzero(is_defect) + np.count_nonzero(labels == 0) != labels.size:
        bad = labels[(labels != 0) & ~is_defect].ravel()[0]
        raise DataError(f"{name} must be 0 (good) or 1 (defective); found {bad.item()!r}")
    return is_defect


def _as_scores(scores, name: str) -> np.ndarray:
    scores = np.asarray(scores)
    if scores.dtype != bool and not (
        np.issubdtype(scores.dtype, np.integer) or np.issubdtype(scores.dtype, np.floating)
    ):
        raise DataError(f"{name} must be real numbers; got dtype {scores.dtype}")
    return scores


def _split(labels, scores, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Scores of the defective and of the good samples, each sorted ascending."""
    is_defect = _as_labels(labels, f"{metric} labels")
    scores = _as_scores(scores, f"{metric} scores")
    if is_defect.shape != scores.shape:
        raise DataError(
            f"{metric} needs labels and scores of one shape; got {is_defect.shape} and {scores.shape}"
        )
    pos = np.sort(scores[is_defect], axis=None)  # a plain sort is ~10x faster than argsort
    neg = np.sort(scores[~is_defect], axis=None)
    if (pos.size and np.isnan(pos[-1])) or (neg.size and np.isnan(neg[-1])):  # sort puts NaN last
        raise DataError(f"{metric} scores contain NaN — check the model output before evaluating")
    return pos, neg


def _need_defects(pos: np.ndarray, metric: str) -> None:
    if pos.size == 0:
        raise DataError(f"{metric} needs at least one defective sample; the labels hold none")


def _distinct(sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of an ascending array and how often each occurs."""
    first = np.flatnonzero(np.concatenate(([True], sorted_values[1:] != sorted_values[:-1])))
    return sorted_values[first], np.diff(np.append(first, sorted_values.size))


def _counts_at_or_above(pos: np.ndarray, neg: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and false positives of `score >= t` for each threshold t (pos, neg sorted ascending)."""
    tp = pos.size - np.searchsorted(pos, thresholds, side="left")
    fp = neg.size - np.searchsorted(neg, thresholds, side="left")
    return tp, fp
