"""The live run loop: frames from a source, scored one by one, handed to sinks, with per-stage timings.

    with open_source(0) as source, EventLog("events.jsonl") as events:
        summary = run_live(predictor, source, [events], headless=True)
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgead.runtime.drift import DriftMonitor, StormWatch
from edgead.runtime.sinks import Result, Sink, WindowSink, anomaly_boxes
from edgead.runtime.sources import Frame

log = logging.getLogger(__name__)

STAGES = ("capture", "preprocess", "inference", "head", "postprocess", "output")


class LatencyHistogram:
    """Mean, maximum and percentiles of millisecond timings in fixed memory (log-spaced bins ~2.3% wide)."""

    EDGES_MS = np.geomspace(1e-3, 1e5, 801).tolist()

    def __init__(self) -> None:
        self.counts = [0] * (len(self.EDGES_MS) + 1)
        self.count, self.total_ms, self.max_ms = 0, 0.0, 0.0

    def add(self, ms: float) -> None:
        self.counts[bisect.bisect_left(self.EDGES_MS, ms)] += 1
        self.count += 1
        self.total_ms += ms
        self.max_ms = max(self.max_ms, ms)

    @property
    def mean_ms(self) -> float:
        return self.total_ms / self.count if self.count else 0.0

    def percentile_ms(self, q: float) -> float:
        """Upper edge of the bin holding the q-th percentile (0 < q <= 100), never above the maximum seen."""
        if not self.count:
            return 0.0
        rank, seen = q / 100.0 * self.count, 0
        for i, n in enumerate(self.counts):
            seen += n
            if seen >= rank and n:
                return min(self.EDGES_MS[min(i, len(self.EDGES_MS) - 1)], self.max_ms)
        return self.max_ms


@dataclass(frozen=True)
class LiveStats:
    """A periodic report: totals so far, FPS and mean ms per stage over the last interval."""

    frames: int
    anomalous: int
    fps: float
    stage_ms: dict[str, float]
    dropped: int
    reconnects: int
    window_frames: int = 0  # frames in this interval, and how many of them were flagged
    window_anomalous: int = 0
    drift: str = "off"  # the drift watch's state: "off", "filling", "ok" or "DRIFT"

    @property
    def flagged_share(self) -> float:
        return self.anomalous / self.frames if self.frames else 0.0

    def line(self) -> str:
        stages = ", ".join(f"{name} {ms:.1f}" for name, ms in self.stage_ms.items())
        recent = f", {self.window_anomalous / self.window_frames:.0%} of the last {self.window_frames}" if self.window_frames else ""
        return (f"{self.frames} frames ({self.anomalous} NG: {self.flagged_share:.0%} flagged{recent}; drift {self.drift}), "
                f"{self.fps:.1f} fps, dropped {self.dropped}, reconnects {self.reconnects} | ms: {stages}")


@dataclass(frozen=True)
class RunSummary:
    """The whole run: counts, overall FPS, mean and p95 ms per stage, and why it stopped."""

    frames: int
    anomalous: int
    duration_s: float
    fps: float
    stage_ms: dict[str, dict[str, float]]  # stage -> {"mean": ms, "p95": ms}
    dropped: int
    reconnects: int
    stopped_by: str  # "end", "max_frames", "interrupt" or "window"
    drift_events: int = 0  # drift and drift-cleared events raised
    drift: str = "off"  # the drift watch's state at the end: "off", "filling", "ok" or "DRIFT"
    storm: bool = False  # more than half of the first window was flagged (said once during the run)

    @property
    def flagged_share(self) -> float:
        return self.anomalous / self.frames if self.frames else 0.0

    def lines(self) -> list[str]:
        head = (f"{self.frames} frames in {self.duration_s:.1f} s ({self.fps:.1f} fps), {self.anomalous} anomalous "
                f"({self.flagged_share:.1%} flagged), drift {self.drift}"
                + (f" ({self.drift_events} drift events)" if self.drift_events else "")
                + (", false-alarm storm in the first window" if self.storm else "")
                + f", dropped {self.dropped}, reconnects {self.reconnects}; stopped by {self.stopped_by}")
        return [head] + [f"  {name:12s} mean {ms['mean']:7.2f} ms   p95 {ms['p95']:7.2f} ms" for name, ms in self.stage_ms.items()]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "flagged_share": self.flagged_share}


class _Timings:
    """Per-stage timings for the whole run (histograms) and for the current report interval (sums)."""

    def __init__(self, now: float) -> None:
        self.whole = {stage: LatencyHistogram() for stage in STAGES}
        self.frames = self.anomalous = 0
        self.started = now
        self._reset_window(now)

    def _reset_window(self, now: float) -> None:
        self.window_ms, self.window_frames, self.window_started = dict.fromkeys(STAGES, 0.0), 0, now
        self.window_anomalous = 0

    def add(self, marks: Sequence[float], anomalous: bool) -> None:
        """marks: the clock before capture and after each stage (len(STAGES) + 1 values, seconds)."""
        for stage, begin, end in zip(STAGES, marks, marks[1:]):
            ms = (end - begin) * 1e3
            self.whole[stage].add(ms)
            self.window_ms[stage] += ms
        self.frames += 1
        self.window_frames += 1
        self.anomalous += anomalous
        self.window_anomalous += anomalous

    def report(self, now: float, source: Any, drift: str = "off") -> LiveStats:
        n = max(self.window_frames, 1)
        fps = self.window_frames / max(now - self.window_started, 1e-9)
        stats = LiveStats(self.frames, self.anomalous, fps, {s: ms / n for s, ms in self.window_ms.items()},
                          _count(source, "dropped"), _count(source, "reconnects"), self.window_frames, self.window_anomalous, drift)
        self._reset_window(now)
        return stats

    def summary(self, now: float, source: Any, stopped_by: str, drift_events: int = 0, drift: str = "off", storm: bool = False) -> RunSummary:
        duration_s = now - self.started
        stage_ms = {s: {"mean": h.mean_ms, "p95": h.percentile_ms(95)} for s, h in self.whole.items()}
        return RunSummary(self.frames, self.anomalous, duration_s, self.frames / max(duration_s, 1e-9), stage_ms,
                          _count(source, "dropped"), _count(source, "reconnects"), stopped_by, drift_events, drift, storm)


def _count(source: Any, name: str) -> int:
    return int(getattr(source, name, 0) or 0)


class _Scorer:
    """The deployed scoring path of `Predictor.predict`, one frame at a time, split into timed stages."""

    def __init__(self, predictor: Any, min_box_area_px: float) -> None:
        self.predictor = predictor
        self.size_px = tuple(predictor.size_px)
        self.map_low = float(predictor.artifact.manifest["postprocess"].get("map_low", 0.0))
        self.min_box_area_px = min_box_area_px

    def score(self, frame: Frame, marks: list[float], clock: Callable[[], float], fps: float) -> Result:
        p = self.predictor
        batch = p.prepare([frame.image])
        marks.append(clock())
        outputs = p.infer(batch)
        marks.append(clock())
        grids = p.head(outputs)
        marks.append(clock())
        image_scores, maps = p.maps(grids, batch)
        anomaly_map, score = maps[0], float(image_scores[0])
        anomalous = score > p.threshold
        boxes = anomaly_boxes(anomaly_map, p.threshold, self.min_box_area_px, frame.image.shape[:2]) if anomalous else []
        marks.append(clock())
        return Result(frame, score, p.threshold, anomalous, boxes, anomaly_map, self.map_low, fps)


def run_live(
    predictor: Any,
    source: Iterable[Frame],
    sinks: Sequence[Sink] = (),
    *,
    headless: bool = True,
    report_every_s: float | None = 5.0,
    max_frames: int | None = None,
    on_stats: Callable[[LiveStats], Any] | None = None,
    min_box_area_px: float = 16,
    clock: Callable[[], float] = time.perf_counter,
    drift: DriftMonitor | None = None,
    storm: StormWatch | None = None,
) -> RunSummary:
    """Score every frame of `source` and hand each result to every sink until the source ends.

    Ctrl-C, `max_frames` or a window's q/Esc stop the run cleanly. The source and every sink are
    closed on the way out, whatever happens; other errors propagate after that.
    `on_stats` receives a LiveStats every `report_every_s` seconds (default: logged at INFO).
    `drift` watches the frame scores: its events are logged as warnings and noted in every sink.
    `storm` (default: over the drift window, else 100 frames) says once when more than half of the run's first
    window is flagged — a false-alarm storm — with what to do, also for a run that ends before the window is full.
    """
    storm = storm or StormWatch(drift.window_frames if drift else 100)
    with ExitStack() as stack:
        for closeable in (source, *sinks):
            if hasattr(closeable, "close"):
                stack.callback(closeable.close)
        outputs = list(sinks)
        if not headless:
            outputs.append(stack.enter_context(WindowSink()))
        report = on_stats or (lambda stats: log.info("%s", stats.line()))
        timings = _Timings(clock())
        name = getattr(source, "name", type(source).__name__)
        log.info("scoring %s with %s at %s px", name, predictor.describe(), "x".join(map(str, predictor.size_px)))
        try:
            stopped_by = _loop(_Scorer(predictor, min_box_area_px), source, outputs, timings, clock,
                               max_frames, report_every_s, report, drift, storm)
        except KeyboardInterrupt:
            stopped_by = "interrupt"
        except BaseException:
            log.warning("stopped after %d frames by an error", timings.frames)
            raise
        _announce(storm.finish(max(0, timings.frames - 1)), outputs)
        summary = timings.summary(clock(), source, stopped_by, drift.events if drift else 0, _drift_state(drift),
                                  storm.done and storm.flagged * 2 > storm.frames)
    for line in summary.lines():
        log.info("%s", line)
    return summary


def _loop(scorer: _Scorer, source: Iterable[Frame], sinks: list[Sink], timings: _Timings, clock: Callable[[], float],
          max_frames: int | None, report_every_s: float | None, report: Callable[[LiveStats], Any],
          drift: DriftMonitor | None = None, storm: StormWatch | None = None) -> str:
    frames = iter(source)
    last_report, last_start, period_s = clock(), None, 0.0
    try:
        while max_frames is None or timings.frames < max_frames:
            start = clock()
            frame = next(frames, None)
            if frame is None:
                return "end"
            marks = [start, clock()]
            if last_start is not None:  # smoothed frame period for the FPS on the banner
                period_s = start - last_start if period_s == 0 else 0.9 * period_s + 0.1 * (start - last_start)
            last_start = start
            result = scorer.score(frame, marks, clock, 1.0 / period_s if period_s > 0 else 0.0)
            for sink in sinks:
                sink.write(result)
            _announce(drift.update(frame.index, result.score) if drift else None, sinks)
            _announce(storm.update(frame.index, result.anomalous) if storm else None, sinks)
            marks.append(clock())
            timings.add(marks, result.anomalous)
            if report_every_s is not None and marks[-1] - last_report >= report_every_s:
                report(timings.report(marks[-1], source, _drift_state(drift)))
                last_report = marks[-1]
            if any(sink.stop_requested for sink in sinks):
                return "window"
        return "max_frames"
    finally:
        if hasattr(frames, "close"):
            frames.close()  # a generator suspended mid-source lets go of its frame


def _announce(event: Any, sinks: Sequence[Sink]) -> None:
    """A run event (drift, drift cleared, a false-alarm storm): a warning on the log and a line in every sink that keeps notes."""
    if event is None:
        return
    log.warning("%s", event.message)
    for sink in sinks:
        sink.note(event.record())


def _drift_state(drift: DriftMonitor | None) -> str:
    return drift.state if drift else "off"
