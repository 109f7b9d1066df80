"""Thresholds at a chosen false-alarm rate, from cross-calibrated scores of good images and a tail model (numpy only).

Detectors hand in the image scores of their good training images, each scored by a model built
without it (k-fold cross-calibration), so every score is what an unseen good image would get. The
threshold for a false-alarm rate `r` (per image) is then:

* inside the data (r >= k/N, k the tail's size): the empirical quantile — at most r·N of the N good
  scores lie above it;
* in the tail (r < k/N): a peaks-over-threshold fit. Above the (k+1)-th largest score `u`, the k
  largest scores' excesses are modelled as exponential with mean `scale`, so
  P(score > t) = (k/N)·exp(-(t - u)/scale) and t(r) = u + scale·ln(k/(N·r)).

Why an exponential tail (a generalised Pareto with shape 0) rather than a free-shape Pareto: an
image score is the maximum (or a high quantile) of thousands of smoothed patch distances, and maxima
of light-tailed values fall in the Gumbel domain, whose excesses over a high level are exponential.
With the 5-10 exceedances tens of good images give, a free shape parameter has a standard error
near 0.35, enough to move a 1/1000 threshold by several score units either way; fixing it at 0 is
the usual peaks-over-threshold choice for light tails, and where the true tail is bounded (shape <
0, typical of distances) it errs towards a higher threshold, i.e. fewer false alarms than asked.
Below a rate of 1/N no good image was seen that rare: the threshold is an extrapolation, and says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgead.errors import ConfigError

SESSION_NOTE = "given for this session (--threshold)"
DEFAULT_FALSE_ALARM_RATE = 0.01  # per good image
DEFAULT_FOLDS = 5
TAIL_FRACTION = 0.2  # of the scores, the largest ones the tail is fitted to
MIN_TAIL, MAX_TAIL = 5, 50


def check_rate(rate: float) -> float:
    rate = float(rate)
    if not 0 < rate < 1:
        raise ConfigError(f"a false-alarm rate is a fraction of good images between 0 and 1 (e.g. 0.01 = 1 in 100), got {rate:g}")
    return rate


@dataclass(frozen=True)
class ExponentialTail:
    """P(score > t) = fraction * exp(-(t - start) / scale) for t >= start; fitted to `exceedances` largest scores."""

    start: float
    scale: float
    exceedances: int
    fraction: float  # exceedances / number of scores

    @classmethod
    def fit(cls, scores: np.ndarray) -> ExponentialTail:
        """Fit to the k largest of >= 2 scores: start = the (k+1)-th largest, scale = their mean excess over it."""
        ordered = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
        n = ordered.size
        k = int(min(max(MIN_TAIL, round(TAIL_FRACTION * n)), MAX_TAIL, n - 1))
        start = float(ordered[k])
        spread = float(ordered[0] - ordered[-1])
        scale = max(float(np.mean(ordered[:k] - start)), 1e-6 * max(spread, abs(start), 1.0))
        return cls(start, scale, k, k / n)

    def rate(self, threshold: float) -> float:
        """Modelled P(score > threshold), for threshold >= start."""
        return self.fraction * math.exp(-(threshold - self.start) / self.scale)

    def threshold(self, rate: float) -> float:
        """The t with rate(t) = rate, for rate <= fraction."""
        return self.start + self.scale * math.log(self.fraction / rate)

    def to_manifest(self) -> dict:
        return {"model": "exponential", "start": self.start, "scale": self.scale, "exceedances": self.exceedances, "fraction": self.fraction}

    @classmethod
    def from_manifest(cls, section: dict) -> ExponentialTail:
        if section.get("model") != "exponential":
            raise ConfigError(f"unknown tail model {section.get('model')!r} in the model's calibration; upgrade edgead")
        return cls(float(section["start"]), float(section["scale"]), int(section["exceedances"]), float(section["fraction"]))


@dataclass(frozen=True)
class ThresholdChoice:
    """A threshold, the false-alarm rate it was chosen for, and whether that rate lies beyond the data (and why)."""

    value: float
    rate: float | None
    extrapolated: bool = False
    note: str = ""
    stale: str = ""  # why the calibration behind it no longer matches the model (enroll changed the bank), if it does not


@dataclass(frozen=True)
class Calibration:
    """Cross-calibrated scores of good images (each scored without itself), their tail fit, and who scored them."""

    scores: tuple[float, ...]
    tail: ExponentialTail
    folds: int
    scored_by: str  # e.g. "eager/fp32" or "onnxruntime/int8"

    @classmethod
    def fit(cls, scores: Sequence[float], folds: int, scored_by: str) -> Calibration:
        values = np.asarray(scores, dtype=np.float64)
        if values.size < 2 or not np.all(np.isfinite(values)):
            raise ConfigError(f"calibration needs at least 2 finite scores of good images, got {values.size}")
        return cls(tuple(float(v) for v in values), ExponentialTail.fit(values), int(folds), scored_by)

    @property
    def images(self) -> int:
        return len(self.scores)

    def threshold(self, rate: float) -> ThresholdChoice:
        """The threshold at which a share `rate` of good images is expected above it (NG)."""
        rate = check_rate(rate)
        ordered = np.sort(np.asarray(self.scores))[::-1]
        n = ordered.size
        if rate >= self.tail.fraction:  # inside the data: the empirical quantile
            return ThresholdChoice(float(ordered[min(int(math.floor(rate * n + 1e-9)), n - 1)]), rate)
        value = self.tail.threshold(rate)
        if rate >= 1.0 / n:
            return ThresholdChoice(value, rate)
        note = (
            f"a false-alarm rate of {rate:g} is below 1/{n} (the {n} good images calibrated): the threshold is extrapolated "
            f"from the exponential tail of the {self.tail.exceedances} highest scores; capture more good images to measure it"
        )
        return ThresholdChoice(value, rate, True, note)

    def false_alarm_rate(self, threshold: float) -> float:
        """Expected share of good images above `threshold`: the tail model above its start, else the empirical share."""
        if threshold >= self.tail.start:
            return self.tail.rate(threshold)
        return float(np.mean(np.asarray(self.scores) > threshold))

    def quantile(self, q: float) -> float:
        """The q-quantile (0-1) of the good scores (for drift: what typical good frames score)."""
        return float(np.quantile(np.asarray(self.scores), q))

    def to_manifest(self, choice: ThresholdChoice | None = None) -> dict:
        section = {
            "method": method_name(self.folds),
            "folds": self.folds,
            "images": self.images,
            "scored_by": self.scored_by,
            "scores": [round(s, 6) for s in self.scores],
            "tail": self.tail.to_manifest(),
        }
        if choice is not None:
            section.update(false_alarm_rate=choice.rate, threshold=choice.value, extrapolated=choice.extrapolated, note=choice.note)
        return section

    @classmethod
    def from_manifest(cls, section: dict | None) -> Calibration | None:
        if not section or "scores" not in section:
            return None
        return cls(tuple(float(s) for s in section["scores"]), ExponentialTail.from_manifest(section["tail"]),
                   int(section.get("folds", 0)), str(section.get("scored_by", "?")))


def method_name(folds: int) -> str:
    """How the calibration scores were obtained, from `folds` (> 1: k-fold; 1: held-out images; 0: in-sample)."""
    if folds > 1:
        return f"{folds}-fold cross-calibration"
    return "held-out images" if folds == 1 else "training images, in-sample (optimistic)"


def score_text(value: float, digits: int = 4) -> str:
    """A score for people: fixed decimals at PatchCore's scale (27.4097), significant digits for small scales (1.2e-05)."""
    return f"{value:.{digits}f}" if abs(value) >= 1 or value == 0 else f"{value:.{digits}g}"


def describe(post: dict) -> list[str]:
    """How the model's threshold was set, in a line for `edgead train` (and a note where its rate lies beyond the data)."""
    section = post.get("calibration")
    if not section or "scores" not in section:
        return [f"threshold: {score_text(post['image_threshold'])} from {post.get('holdout_images', '?')} held-out good images"]
    folds, held = int(section.get("folds", 0)), int(post.get("holdout_images") or 0)
    copies = int((section.get("nuisance") or {}).get("copies", 0))
    images = f"{section['images'] // (1 + copies)} good images and their {copies} nuisance copies each" if copies else f"{section['images']} good images"
    if folds > 1:
        how = f"{folds}-fold cross-calibration of {images}: each scored by a model built without its fold"
        how += f", {held} of them held out of the model and scored by all of it" if held else ""
    elif folds == 1:
        how = f"{images} held out of the model"
    else:
        how = f"the training images' own scores ({images}) (optimistic: expect more false alarms; hold some out with --holdout)"
    low, high = min(section["scores"]), max(section["scores"])
    lines = [f"threshold: {score_text(post['image_threshold'])} for a false-alarm rate of {section['false_alarm_rate']:g} per good image "
             f"({how}; scores {score_text(low, 2)}-{score_text(high, 2)})"]
    return lines + ([f"note: {section['note']}"] if section.get("extrapolated") else [])


def choose_threshold(
    post: dict, engine: dict | None, threshold: float | None = None, false_alarm_rate: float | None = None
) -> tuple[ThresholdChoice, Calibration | None]:
    """The image threshold a runtime uses, and the calibration behind it.

    Order: a session `threshold`; a session `false_alarm_rate` on the engine's own calibration (else
    the model's); the engine's own threshold (set at export, by enroll or by --adopt-threshold); the
    model's threshold. `post` is the manifest's postprocess section, `engine` the opened engine's entry.
    """
    engine = engine or {}
    calibration = Calibration.from_manifest(engine.get("calibration")) or Calibration.from_manifest(post.get("calibration"))
    if threshold is not None:
        expected = calibration.false_alarm_rate(threshold) if calibration else None  # what the calibration expects of it
        return ThresholdChoice(float(threshold), expected, False, SESSION_NOTE), calibration
    if false_alarm_rate is not None:
        if calibration is None:
            raise ConfigError("this model has no cross-calibrated scores to choose a threshold by false-alarm rate: "
                              "re-train it with this edgead, or give --threshold")
        return calibration.threshold(false_alarm_rate), calibration
    holder = engine if "threshold" in engine else post
    value = float(holder["threshold"] if holder is engine else post["image_threshold"])
    section = holder.get("calibration") or {}
    source = holder.get("threshold_source") or {}
    stale = section.get("stale", "")
    if source.get("rule", "false_alarm_rate") != "false_alarm_rate":  # adopted from labelled data (eval --adopt-threshold)
        return ThresholdChoice(value, None, False, f"{source['rule']} threshold adopted from {source.get('data', '?')}", stale), calibration
    return ThresholdChoice(value, section.get("false_alarm_rate"), bool(section.get("extrapolated")), section.get("note", ""), stale), calibration


def postprocess_section(scores: Sequence[float], false_alarm_rate: float, folds: int, scored_by: str, map_low: float,
                        holdout_images: int = 0) -> dict:
    """The manifest's threshold and calibration entries (merged into `postprocess`) from cross-calibrated good scores.

    Every detector calls this with its own scores: `folds` > 1 when each image was scored by a model
    built without its fold; `map_low` is the typical good pixel of the maps (0 of the heatmap scale).
    """
    calibration = Calibration.fit(scores, folds, scored_by)
    choice = calibration.threshold(false_alarm_rate)
    values = np.asarray(scores, dtype=np.float64)
    return {
        "image_threshold": choice.value,
        "image_score_mean": float(values.mean()),
        "image_score_std": float(values.std()),
        "image_score_max": float(values.max()),
        "holdout_images": int(holdout_images),
        "map_low": float(map_low),  # colour scale of heatmaps: 0 at the typical good pixel, 1 at the threshold
        "calibration": calibration.to_manifest(choice),
    }
