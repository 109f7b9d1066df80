"""Enroll new good images on the device: their patch features join the bank, re-subsampled, and the threshold is recalibrated.

No engine rebuild and no torch. The new images are cross-calibrated like the training images were:
each fold of them scored against the old bank plus the other folds' features, subsampled with the
model's coreset rule. Then the threshold is set again for the model's false-alarm rate, one of two ways:

* `all`: their scores join the calibration's (the training images and their copies), as when more of
  the same material is enrolled;
* `new`: for new material (drift). Joined to a few hundred old scores, a few new ones do not move the
  threshold, which stays where the old material put it, above most defects of the new one. Tens of
  new images cannot set a threshold for a 1% rate by themselves either (their tail, extrapolated from
  a handful of scores, lands anywhere): the new images give the level, the old calibration the shape.
  They are cross-calibrated with up to `MAX_NEW_FOLDS` folds (leave-one-out for up to that many: with
  5 folds a fifth of the new material is missing from each fold bank, and the new images score well
  above what the enrolled bank gives the material), the old calibration's scores are moved by the
  difference of the medians, and the threshold for the model's rate is set on them, never below a
  new image's score. Their nuisance copies are not scored: they are camera frames already, and
  copies of them (recompressed again, relit) set the threshold above the new material's defects.

`auto` (the default) takes `new` when the new images drifted, by `run`'s own test (the median of their
scores before enrolling above the 0.9 quantile of the calibration), else `all`.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgead.artifact import npy_bytes, write_artifact
from edgead.errors import ConfigError
from edgead.progress import Progress, silent_progress
from edgead.runtime.calibration import Calibration, ThresholdChoice
from edgead.runtime.coreset import coreset_target, greedy_coreset
from edgead.runtime.crossval import collect_outputs, image_scorer
from edgead.runtime.drift import DRIFT_QUANTILE
from edgead.runtime.heads.knn import KnnHead
from edgead.runtime.images import read_image
from edgead.runtime.predictor import Predictor

__all__ = ["EnrollSummary", "MIN_NEW_IMAGES", "RECALIBRATE", "coreset_target", "enroll_images"]

RECALIBRATE = ("auto", "all", "new")
# `new` sets a threshold from the new images alone: 2 per fold of the 5-fold cross-calibration, and the tail's 5 largest
# scores from no more than half of them (their copies are not independent of them)
MIN_NEW_IMAGES = 10
MAX_NEW_FOLDS = 20  # `new`: leave-one-out cross-calibration up to this many images, then this many folds


@dataclass(frozen=True)
class EnrollSummary:
    """How the bank and the threshold changed, in the counts a user can check."""

    images: int
    bank_before: int
    bank_after: int
    new_features: int  # patch features of the new images
    new_kept: int  # of them, how many joined the bank
    old_kept: int  # of the bank's features, how many stayed
    patches_seen: int  # every patch feature the bank now stands for
    rule: str  # the coreset rule in words: "10% of", "at most 5000 of"
    radius_before: float
    radius_after: float
    scores_before: tuple[float, ...]  # the new images, by the model before enrolling
    threshold_before: float
    threshold_after: float
    copies_seen: int = 0  # of patches_seen, the nuisance copies' features (subsampled at their own share at training)
    copies_kept: int = 0  # bank rows allowed for the nuisance copies on top of the rule (their own coreset share at training)
    new_scores: tuple[float, ...] = ()  # the new images cross-calibrated (each without its fold)
    calibrated: int = 0  # good images behind the new threshold
    rate: float | None = None
    notes: list[str] = field(default_factory=list)
    recalibrated: str = "all"  # "all": the new scores joined the old; "new": the threshold stands on the new images alone
    why: str = ""  # why that way, in words (auto's drift test)
    shift: float = 0.0  # "new": the median new score less the median old one, by which the old calibration moved
    moved_threshold: float | None = None  # "new": the moved calibration's threshold, where the largest new score was above it

    def lines(self) -> list[str]:
        """The summary in words."""
        dropped = self.bank_before - self.old_kept
        rule = f"{self.rule} all {self.patches_seen} patch features seen"
        if self.copies_kept:
            rule = f"{self.rule} the images' {self.patches_seen - self.copies_seen} patch features seen, plus {self.copies_kept} rows for their nuisance copies"
        out = [
            f"memory bank: {self.bank_before} -> {self.bank_after} patch features. Of the {self.new_features} patch features of the "
            f"{self.images} new images, {self.new_kept} differ enough from the bank to join it; {dropped} of the {self.bank_before} "
            f"it had were dropped as near-duplicates of new ones (the bank keeps {rule}).",
            f"coverage radius {self.radius_before:.3f} -> {self.radius_after:.3f}: no patch seen so far is farther than that from the bank.",
        ]
        before = np.asarray(self.scores_before)
        flagged = int((before > self.threshold_before).sum())
        out.append(f"before enrolling, the model scored the new images {before.min():.2f}-{before.max():.2f} "
                   f"({flagged} of {self.images} above its threshold {self.threshold_before:.4f}).")
        if self.new_scores:
            new = np.asarray(self.new_scores)
            rate = f" for a false-alarm rate of {self.rate:g}" if self.rate is not None else ""
            out.append(f"threshold {self.threshold_before:.4f} -> {self.threshold_after:.4f}{rate}: the new images score {new.min():.2f}-{new.max():.2f} "
                       f"against banks built without them; the threshold now stands on {self._standing()}.")
        if self.why:
            out.append(self.why)
        return out + [f"note: {note}" for note in self.notes]

    def _standing(self) -> str:
        if self.recalibrated != "new":
            return f"{self.calibrated} good images"
        text = (f"the old calibration's {self.calibrated} scores moved by {self.shift:+.2f} to the new material's level (the "
                f"new images' median, against banks without each of them)")
        if self.moved_threshold is not None:
            text += f"; it gave {self.moved_threshold:.4f}, below the new images' largest score, which is the threshold instead"
        return text


def enroll_images(
    predictor: Predictor, paths: Sequence[Path], out: Path, progress: Progress = silent_progress, recalibrate: str = "auto",
) -> EnrollSummary:
    """Add the patch features of `paths` to the bank of `predictor`'s artifact, recalibrate, and write it to `out` atomically.

    The old bank and the new features are subsampled together with the model's own coreset setting
    (a fraction of every patch feature seen so far, or a fixed count). The threshold that moves is the
    one the predictor runs with (its engine's own, else the model's); other calibrations are marked
    stale, to be renewed by `edgead export`. `recalibrate`: "all", "new" or "auto" (module docstring).
    """
    artifact = predictor.artifact
    head = predictor.scoring_head
    if not isinstance(head, KnnHead):
        raise ConfigError(
            f"enroll adds good images to a memory bank; {artifact.path} ({artifact.manifest['method']}) scores with "
            f"the {head.name} head and has none: retrain it with the new good images instead"
        )
    if len(paths) < 1:
        raise ConfigError("give at least one good image to enroll")
    if recalibrate not in RECALIBRATE:
        raise ConfigError(f"--recalibrate {recalibrate!r}: give one of {', '.join(RECALIBRATE)}")
    if recalibrate == "new" and len(paths) < MIN_NEW_IMAGES:
        raise ConfigError(
            f"--recalibrate new sets the threshold at the new images' level and needs at least {MIN_NEW_IMAGES} of them to "
            f"estimate it; got {len(paths)}: capture more good frames (`edgead capture SOURCE --out new-good "
            f"--count {2 * MIN_NEW_IMAGES}`), or join these to the old calibration with --recalibrate all"
        )
    manifest = copy.deepcopy(artifact.manifest)
    info = manifest["memory_bank"]
    settings = info["coreset"]
    items = collect_outputs(predictor, [read_image(p) for p in paths], progress)
    layouts = [item.layout for item in items]
    before = [predictor.maps(predictor.head(item.outputs), item.layout)[0][0] for item in items]
    new = np.concatenate([_rows(item.outputs[head.output]) for item in items]).astype(np.float32)
    old = head.bank.features.astype(np.float32)
    old_seen = int(info.get("patch_features_seen", old.shape[0]))
    seen = old_seen + new.shape[0]
    combined = np.concatenate([old, new])
    # bank copies were subsampled at a share of their own: the rule covers the images' features, the copies keep their rows
    # (counted under the rule, their features seen would give the new images several times the share of the training images)
    copies = info.get("nuisance_copies") or {}
    copies_seen, copies_kept = int(copies.get("seen", 0)), int(copies.get("kept", 0))
    target = min(coreset_target(settings, seen - copies_seen) + copies_kept, combined.shape[0])
    with progress("coreset", target) as advance:
        coreset = greedy_coreset(combined, target, int(settings["projection_dim"]), int(settings["seed"]), advance)
    bank = combined[coreset.indices].astype(np.float16)
    members = dict(artifact.members)
    members[info["member"]] = npy_bytes(bank)
    new_kept = int((coreset.indices >= old.shape[0]).sum())
    radius_before = float(info.get("coreset_radius", float("nan")))
    info.update(count=int(bank.shape[0]), coreset_radius=coreset.radius, patch_features_seen=seen)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    summary = dict(images=len(paths), bank_before=int(old.shape[0]), bank_after=int(bank.shape[0]), new_features=int(new.shape[0]),
                   new_kept=new_kept, old_kept=int(bank.shape[0]) - new_kept, patches_seen=seen, rule=_rule(settings), copies_seen=copies_seen,
                   copies_kept=copies_kept, radius_before=radius_before,
                   radius_after=coreset.radius, scores_before=tuple(float(s) for s in before), threshold_before=predictor.threshold,
                   threshold_after=predictor.threshold)
    base = _Base(old, old_seen - copies_seen, copies_kept)
    recalibrated = _recalibrate(predictor, manifest, items, layouts, base, stamp, progress, recalibrate, before)
    summary.update(recalibrated)
    manifest.setdefault("enrolled", []).append(
        {"time": stamp, "images": len(paths), "features_kept": new_kept, "threshold": summary["threshold_after"],
         "recalibrated": summary.get("recalibrated", "all")}
    )
    write_artifact(out, manifest, members)
    return EnrollSummary(**summary)


@dataclass(frozen=True)
class _Base:
    """The bank before enrolling, as every fold bank of the new images holds it."""

    bank: np.ndarray  # (M, C)
    seen: int  # the images' patch features behind it, under the coreset rule
    copy_rows: int  # its rows beyond the rule (the nuisance copies' own share)


def _recalibrate(predictor: Predictor, manifest: dict[str, Any], items, layouts, base: _Base, stamp: str, progress: Progress,
                 recalibrate: str, before: Sequence[float]) -> dict[str, Any]:
    """Cross-calibrate the new images and set the threshold in use again: from them and the old scores, or from them alone."""
    post = manifest["postprocess"]
    engine = _entry(manifest, predictor.backend.engine)
    holder = engine if engine is not None and "calibration" in engine else post
    section = holder.get("calibration")
    if not section or "scores" not in section:
        if recalibrate == "new":
            raise ConfigError(f"--recalibrate new: {predictor.artifact.path} has no cross-calibration to recalibrate "
                              f"(re-train it with this edgead)")
        return {"notes": ["the threshold is kept: this model has no cross-calibration to extend (re-train it with this edgead)"]}
    calibration = Calibration.from_manifest(section)
    mode, why = _mode(recalibrate, calibration, before)
    folds = int(section.get("folds") or 5)
    seed = int(manifest.get("config", {}).get("seed", 0))
    own_folds = min(len(items), MAX_NEW_FOLDS) if mode == "new" else folds
    new_scores = [float(s) for s in predictor.scoring_head.fold_scores(  # each against the old bank plus the other folds' new images
        [item.outputs for item in items], image_scorer(predictor, layouts), own_folds, seed, progress=progress,
        base_bank=base.bank, base_seen=base.seen, base_copy_rows=base.copy_rows)]
    shift = 0.0
    if mode == "new":  # the old calibration's shape at the new material's level
        shift = float(np.median(new_scores) - np.median(calibration.scores))
        refit = Calibration.fit([s + shift for s in calibration.scores], folds, calibration.scored_by)
    else:
        refit = Calibration.fit(list(calibration.scores) + new_scores, folds, calibration.scored_by)
    rate = section.get("false_alarm_rate")
    choice = refit.threshold(rate) if rate else None
    moved = None
    if choice is not None and mode == "new" and choice.value < max(new_scores):
        moved = choice.value
        choice = ThresholdChoice(max(new_scores), choice.rate, choice.extrapolated, choice.note)  # no new good image flagged
    updated = refit.to_manifest(choice)
    updated.update({k: v for k, v in section.items() if k in (("images_from", "nuisance") if mode == "new" else ("images_from",))})
    if mode == "new":
        updated["shifted"] = {"by": shift, "to": f"the median of {len(items)} images enrolled on {stamp}, each scored against the "
                              f"bank without it ({own_folds} folds)", "new_scores": [round(s, 6) for s in new_scores],
                              "threshold_before": float(predictor.threshold)}
    holder["calibration"] = updated
    notes = [] if choice is None or not choice.extrapolated else [choice.note]
    adopted = (holder.get("threshold_source") or {}).get("rule", "false_alarm_rate") != "false_alarm_rate"
    value = predictor.threshold
    if choice is not None and not adopted:
        value = choice.value
        if holder is engine:
            engine["threshold"] = value
        else:
            post["image_threshold"] = value
    elif adopted:
        notes.append(f"the threshold {value:.4f} was adopted from labelled data and is kept; at the calibrated "
                     f"false-alarm rate it would now be {choice.value:.4f}" if choice else "the adopted threshold is kept")
    stale = f"calibrated before `edgead enroll` changed the bank on {stamp}; re-export this engine to recalibrate it"
    for entry in manifest["engines"]:
        if entry is not holder and "calibration" in entry:
            entry["calibration"]["stale"] = stale
    if holder is not post:
        post["calibration"]["stale"] = stale.replace("this engine", "the model (or retrain)")
    return {"threshold_after": value, "new_scores": tuple(new_scores), "calibrated": refit.images, "rate": rate, "notes": notes,
            "recalibrated": mode, "why": why, "shift": shift, "moved_threshold": moved}


def _mode(recalibrate: str, calibration: Calibration, before: Sequence[float]) -> tuple[str, str]:
    """("all" or "new", why in words): auto takes "new" where the new images drifted, by `run`'s drift test."""
    median, reference = float(np.median(before)), calibration.quantile(DRIFT_QUANTILE)
    drifted = median > reference
    test = (f"the new images' median score before enrolling, {median:.2f}, is {'above' if drifted else 'not above'} what "
            f"{DRIFT_QUANTILE:.0%} of the calibration's good images scored ({reference:.2f})")
    if recalibrate == "all":
        return "all", f"recalibrated with the old material (--recalibrate all; {test})"
    if recalibrate == "new":
        return "new", f"recalibrated for the new material (--recalibrate new; {test})"
    if not drifted:
        return "all", f"recalibrated with the old material: {test}, so they are more of the same (--recalibrate new to set the threshold at their level)"
    if len(before) < MIN_NEW_IMAGES:
        return "all", (f"recalibrated with the old material although the new images drifted ({test}): {len(before)} images are too few "
                       f"to set the threshold at their level (at least {MIN_NEW_IMAGES}); the threshold stays near the old material's, "
                       f"above the new material's defects: enroll {MIN_NEW_IMAGES} or more good frames of it")
    return "new", f"recalibrated for the new material: {test}, drift (--recalibrate all to join them to the old calibration instead)"


def _rule(settings: dict[str, Any]) -> str:
    if settings.get("count") is not None:
        return f"at most {int(settings['count'])} of"
    return f"{float(settings['fraction']):.0%} of"


def _entry(manifest: dict[str, Any], engine: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest's own entry of the opened engine (by member), or None (an eager backend)."""
    member = engine.get("member")
    return next((e for e in manifest["engines"] if member and e.get("member") == member), None)


def _rows(features: np.ndarray) -> np.ndarray:
    """(T, C, h, w) -> (T*h*w, C)."""
    return features.transpose(0, 2, 3, 1).reshape(-1, features.shape[1])
