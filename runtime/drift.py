"""Drift: the frames of a run scoring, for a sustained stretch, above what good images scored at calibration.

A line changes under a model: lighting, focus, compression, a new batch of material. Good frames then
score higher and higher until they cross the threshold and stop the line. The monitor keeps the last
`window_frames` scores and compares their median — robust to the odd defective frame — with the
calibration's `quantile` (0.9: a score only one good image in ten reached). When the median of a full
window stays above it, good-looking frames have drifted: that is said once, with what to do, and
again when the scores come back (not before a whole new window has passed, so a border case does
not flood the log).
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

import numpy as np

from edgead.errors import ConfigError

# new scores whose median is above this quantile of the good calibration scores drifted (run's monitor, enroll --recalibrate auto)
DRIFT_QUANTILE = 0.9

ADVICE = (
    "lighting, focus, compression or the material may have changed. If these frames are good, capture some and add them "
    "to the model (`edgead capture SOURCE --out new-good`, check them, then `edgead enroll new-good`); if the product "
    "changed, retrain (`edgead train`)"
)


@dataclass(frozen=True)
class DriftEvent:
    """A change of state: "drift" (scores rose above the good calibration) or "drift_cleared" (they came back)."""

    event: str
    frame: int
    median_score: float
    reference: float  # the calibration's quantile the median is compared with
    quantile: float
    window_frames: int
    threshold: float
    message: str

    def record(self) -> dict:
        """One JSON line for the event log."""
        return {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), **asdict(self)}


class DriftMonitor:
    """Rolling median of frame scores against a high quantile of the good calibration scores."""

    def __init__(self, reference: float, threshold: float, window_frames: int = 100, quantile: float = DRIFT_QUANTILE) -> None:
        if window_frames < 2:
            raise ConfigError(f"--drift-window must be at least 2 frames, got {window_frames}")
        self.reference, self.threshold, self.quantile = float(reference), float(threshold), quantile
        self.window_frames = window_frames
        self.scores: deque[float] = deque(maxlen=window_frames)
        self.drifting = False
        self.events = 0
        self._quiet_until = 0  # frames seen before which no new event is raised

    @classmethod
    def for_predictor(cls, predictor, window_frames: int = 100, quantile: float = DRIFT_QUANTILE) -> DriftMonitor | None:
        """From the calibration behind the predictor's threshold; None for a model without calibration scores."""
        calibration = getattr(predictor, "calibration", None)
        if calibration is None:
            return None
        return cls(calibration.quantile(quantile), predictor.threshold, window_frames, quantile)

    @property
    def state(self) -> str:
        """For the periodic line: "filling" until the first window is full, then "DRIFT" or "ok"."""
        if len(self.scores) < self.window_frames:
            return "filling"
        return "DRIFT" if self.drifting else "ok"

    def update(self, frame: int, score: float) -> DriftEvent | None:
        """Add one frame's score; the event if the state changed."""
        self.scores.append(float(score))
        seen = frame + 1
        if len(self.scores) < self.window_frames or seen < self._quiet_until:
            return None
        median = float(np.median(self.scores))
        if self.drifting == (median > self.reference):
            return None
        self.drifting = not self.drifting
        self._quiet_until = seen + self.window_frames
        self.events += 1
        share = f"{self.quantile:.0%}"
        if self.drifting:
            message = (f"drift: the median score of the last {self.window_frames} frames is {median:.3f}, above what {share} of the good "
                       f"calibration images scored ({self.reference:.3f}; the threshold is {self.threshold:.3f}) — {ADVICE}")
        else:
            message = (f"drift cleared: the median score of the last {self.window_frames} frames is back to {median:.3f}, "
                       f"below {self.reference:.3f}")
        return DriftEvent("drift" if self.drifting else "drift_cleared", frame, median, self.reference, self.quantile,
                          self.window_frames, self.threshold, message)


STORM_ADVICE = (
    "good frames are probably scoring above the threshold (a new camera, lighting, compression or batch of material). If these "
    "frames are good, capture some and add them to the model (`edgead capture SOURCE --out new-good`, check them, then "
    "`edgead enroll new-good`), or retrain with the camera's frames (`edgead train new-good`); a line with this many "
    "defects should be stopped anyway"
)
MIN_STORM_FRAMES = 10  # a run shorter than this says nothing: too few frames to tell a storm from a bad batch


@dataclass(frozen=True)
class StormEvent:
    """More than half of the first window of a run flagged: said once, with what to do."""

    event: str
    frame: int
    flagged: int
    frames: int
    share: float
    message: str

    def record(self) -> dict:
        return {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), **asdict(self)}


class StormWatch:
    """Counts the flagged frames of a run's first `window_frames`; more than half of them flagged is a false-alarm storm."""

    def __init__(self, window_frames: int = 100) -> None:
        if window_frames < 2:
            raise ConfigError(f"the first window of a run must be at least 2 frames, got {window_frames}")
        self.window_frames = window_frames
        self.frames = self.flagged = 0
        self.done = False

    def update(self, frame: int, anomalous: bool) -> StormEvent | None:
        """Add one frame's verdict; the event once the first window is full and more than half of it was flagged."""
        if self.done:
            return None
        self.frames += 1
        self.flagged += bool(anomalous)
        return self._verdict(frame) if self.frames >= self.window_frames else None

    def finish(self, frame: int) -> StormEvent | None:
        """At the end of a run shorter than the window: the same verdict on the frames there were (at least MIN_STORM_FRAMES)."""
        if self.done or self.frames < MIN_STORM_FRAMES:
            return None
        return self._verdict(frame)

    def _verdict(self, frame: int) -> StormEvent | None:
        self.done = True
        share = self.flagged / max(1, self.frames)
        if self.flagged * 2 <= self.frames:
            return None
        message = (f"false-alarm storm: {self.flagged} of the first {self.frames} frames ({share:.0%}) were flagged NG — {STORM_ADVICE}")
        return StormEvent("false_alarm_storm", frame, self.flagged, self.frames, share, message)
