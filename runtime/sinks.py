"""Where scored frames go: a JSONL event log, an annotated video, saved anomalous frames, a window.

Every sink is a context manager with an idempotent `close()` and one method, `write(result)`.
Files are written so that what is already on disk stays valid after Ctrl-C or a full disk.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgead.errors import ConfigError, EdgeADError
from edgead.runtime.images import write_image
from edgead.runtime.sources import Frame
from edgead.runtime.visualize import framed, heatmap_overlay, verdict_text

log = logging.getLogger(__name__)

BOX_COLOUR = (255, 255, 255)


class SinkError(EdgeADError):
    """An output (event log, video, saved frames) that cannot be written."""


def anomaly_boxes(
    anomaly_map: np.ndarray, threshold: float, min_area_px: float = 16, frame_hw: tuple[int, int] | None = None
) -> list[list[int]]:
    """Boxes [x, y, w, h] around the 8-connected regions of an (h, w) map above `threshold`.

    With `frame_hw` the boxes are scaled to a frame of that (H, W); `min_area_px` is counted in the
    pixels the boxes are given in. Regions come in raster order of their top-left pixel.
    """
    mask = (anomaly_map > threshold).astype(np.uint8)
    if not mask.any():
        return []
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    map_h, map_w = mask.shape
    frame_h, frame_w = frame_hw or (map_h, map_w)
    sy, sx = frame_h / map_h, frame_w / map_w
    boxes = []
    for x, y, w, h, area in stats[1:].tolist():
        if area * sx * sy < min_area_px:
            continue
        x0, y0 = math.floor(x * sx), math.floor(y * sy)
        x1, y1 = min(math.ceil((x + w) * sx), frame_w), min(math.ceil((y + h) * sy), frame_h)
        boxes.append([x0, y0, x1 - x0, y1 - y0])
    return boxes


def annotate(image: np.ndarray, anomaly_map: np.ndarray, low: float, high: float, score: float, anomalous: bool,
             boxes: list[list[int]], fps: float) -> np.ndarray:
    """(H, W, 3) RGB frame -> the frame with the heatmap and boxes, an OK/NG banner (score, FPS) above and the colour bar below."""
    out = heatmap_overlay(image, anomaly_map, low, high)
    thickness = max(1, min(out.shape[:2]) // 200)
    for x, y, w, h in boxes:
        cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), BOX_COLOUR, thickness)
    label = verdict_text(score, high, anomalous) + (f"  {fps:.1f} fps" if fps > 0 else "")
    return framed(out, label, anomalous, low, high)


@dataclass
class Result:
    """What the run loop knows about one frame; `annotated` is drawn once, when a sink first asks."""

    frame: Frame
    score: float
    threshold: float
    anomalous: bool
    boxes: list[list[int]]  # [x, y, w, h] in frame pixels
    anomaly_map: np.ndarray  # (h, w) float32 at the model input size
    map_low: float = 0.0
    fps: float = 0.0
    _annotated: np.ndarray | None = field(default=None, repr=False)

    @property
    def annotated(self) -> np.ndarray:
        if self._annotated is None:
            self._annotated = annotate(self.frame.image, self.anomaly_map, self.map_low, self.threshold,
                                       self.score, self.anomalous, self.boxes, self.fps)
        return self._annotated


class Sink:
    """Base of all sinks; `stop_requested` lets one (a window) ask the run loop to stop."""

    stop_requested = False
    closed = False

    def write(self, result: Result) -> None:
        raise NotImplementedError

    def note(self, event: dict[str, Any]) -> None:
        """An event about the run rather than a frame (drift); only the event log keeps these."""

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _write_error(path: Path, exc: OSError, intact: str) -> SinkError:
    if exc.errno == errno.ENOSPC:
        return SinkError(f"the disk is full while writing {path}; {intact} — free space and run again")
    return SinkError(f"could not write {path}: {exc.strerror or exc}; {intact} — check the path and its permissions")


def _open_append(path: Path) -> Any:
    return open(path, "ab", buffering=0)  # unbuffered: each line reaches the OS whole, nothing waits in Python


class EventLog(Sink):
    """Appends one JSON line per anomalous frame (event "anomaly": time in ISO 8601 UTC, frame, score, threshold, boxes)
    and one per run event (event "drift" or "drift_cleared", with its message)."""

    def __init__(self, path: str | Path, open_file: Callable[[Path], Any] = _open_append) -> None:
        self.path = Path(path)
        self.events = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open_file(self.path)
        except OSError as exc:
            raise SinkError(f"cannot open the event log {self.path}: {exc.strerror or exc} — check the path and its permissions") from exc

    def write(self, result: Result) -> None:
        if not result.anomalous:
            return
        record = {
            "event": "anomaly",
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "frame": result.frame.index,
            "score": round(result.score, 6),
            "threshold": round(result.threshold, 6),
            "boxes": result.boxes,
        }
        self._append((json.dumps(record) + "\n").encode("utf-8"))
        self.events += 1

    def note(self, event: dict[str, Any]) -> None:
        self._append((json.dumps(event) + "\n").encode("utf-8"))
        self.events += 1

    def _append(self, data: bytes) -> None:
        start = self._file.tell()
        try:
            view = memoryview(data)
            while view:
                view = view[self._file.write(view):]  # a raw write may take part of the bytes
        except OSError as exc:
            try:
                self._file.truncate(start)  # drop a partial line: the lines before it stay valid JSON
            except OSError as undo:
                log.error("%s: could not remove a partial last line (%s)", self.path, undo)
            raise _write_error(self.path, exc, f"the {self.events} events before it are intact") from exc

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        try:
            os.fsync(self._file.fileno())
        except (OSError, AttributeError, ValueError):
            pass  # not a real file (tests) or a pipe: nothing to sync
        self._file.close()


class VideoSink(Sink):
    """Annotated frames into a video (mp4v; MJPG .avi if that fails), opened at the first frame's size."""

    def __init__(self, path: str | Path, fps: float = 30.0, writer_factory: Callable[..., Any] = cv2.VideoWriter,
                 min_free_bytes: int = 64 << 20, disk_usage: Callable[[Path], Any] = shutil.disk_usage) -> None:
        if not fps > 0:
            raise ConfigError(f"video frame rate must be > 0, got {fps}")
        self.path, self.fps, self.frames = Path(path), float(fps), 0
        self._factory, self._min_free, self._disk_usage = writer_factory, min_free_bytes, disk_usage
        self._writer: Any = None
        self._size: tuple[int, int] | None = None  # (width, height)

    def write(self, result: Result) -> None:
        image = result.annotated
        if self._writer is None:
            self._open(image.shape[1], image.shape[0])
        if (image.shape[1], image.shape[0]) != self._size:  # a writer silently drops frames of another size
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        if self.frames % 256 == 0:
            self._check_space()
        self._writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def _open(self, width: int, height: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tried = []
        for path, codec in self._candidates():
            writer = self._factory(str(path), cv2.VideoWriter_fourcc(*codec), self.fps, (width, height))
            if writer.isOpened():
                if path != self.path:
                    log.warning("%s: could not write %s video here; writing %s (%s) instead", self.path, tried[-1], path, codec)
                self._writer, self._size, self.path = writer, (width, height), path
                return
            writer.release()
            tried.append(codec)
        raise SinkError(
            f"could not open {self.path} for a {width}x{height} video (tried {', '.join(tried)}) — check that the "
            "folder is writable and use a .mp4 or .avi name"
        )

    def _candidates(self) -> list[tuple[Path, str]]:
        if self.path.suffix.lower() == ".avi":
            return [(self.path, "MJPG")]
        return [(self.path, "mp4v"), (self.path.with_suffix(".avi"), "MJPG")]

    def _check_space(self) -> None:
        # VideoWriter reports no write errors: stop while there is room left to finalise the file
        free = self._disk_usage(self.path.parent).free
        if free < self._min_free:
            raise SinkError(
                f"the disk holding {self.path} has only {free >> 20} MB free; stopped the video after "
                f"{self.frames} frames so that it stays playable — free space and run again"
            )

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        if self._writer is not None:
            self._writer.release()


class AnomalySaver(Sink):
    """Saves each anomalous frame, annotated, as a PNG named by UTC time and frame index."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.saved = 0
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(f"cannot create {self.folder}: {exc.strerror or exc} — check the path and its permissions") from exc

    def write(self, result: Result) -> None:
        if not result.anomalous:
            return
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%f")[:-3]
        path = self.folder / f"{stamp}Z_frame{result.frame.index:08d}.png"
        try:
            write_image(path, result.annotated)
        except OSError as exc:
            path.unlink(missing_ok=True)  # no truncated PNG left behind
            raise _write_error(path, exc, f"the {self.saved} frames saved before it are intact") from exc
        self.saved += 1


def gui_problem() -> str | None:
    """Why OpenCV cannot open a window here, or None if it probably can."""
    found = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    if found and found.group(1).upper() == "NONE":
        return "this OpenCV build has no GUI support (opencv-python-headless is installed)"
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display is available ($DISPLAY is not set)"
    return None


class WindowSink(Sink):
    """Shows annotated frames in an OpenCV window; q or Esc (or closing the window) stops the run."""

    def __init__(self, title: str = "edgead") -> None:
        self.title = title
        problem = gui_problem()
        try:
            if problem is None:
                cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error as exc:
            problem = f"OpenCV could not open a window ({str(exc).strip().splitlines()[-1]})"
        if problem:
            raise ConfigError(
                f"cannot show a window: {problem} — pass --headless (with --save-video or --events to keep the "
                "output), or install opencv-python instead of opencv-python-headless"
            )

    def write(self, result: Result) -> None:
        cv2.imshow(self.title, cv2.cvtColor(result.annotated, cv2.COLOR_RGB2BGR))
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27) or cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
            self.stop_requested = True

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        try:
            cv2.destroyWindow(self.title)
        except cv2.error as exc:  # the user closed it already
            log.debug("%s: %s", self.title, exc)
