"""Where frames come from: a camera index, a video file, an image folder, or a URI OpenCV opens.

Every source yields `Frame`s of (H, W, 3) uint8 RGB and is a context manager with an idempotent
`close()`. Live sources (cameras, streams) read on a background thread into a small buffer that
drops the oldest frame when the consumer falls behind, and reconnect with exponential back-off
when the stream stops delivering.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgead.errors import ConfigError, DataError
from edgead.runtime.images import is_image_path, list_images, read_image, to_rgb

log = logging.getLogger(__name__)

CaptureFactory = Callable[[Any, int], Any]  # (index or URI, OpenCV API preference) -> VideoCapture-like


@dataclass(frozen=True)
class Frame:
    """One frame: its index in the stream, seconds since the source opened (video: position in the file)."""

    index: int
    timestamp_s: float
    image: np.ndarray  # (H, W, 3) uint8 RGB
    source: str


@dataclass(frozen=True)
class ReconnectPolicy:
    """Back-off for a live source that stops delivering: delays double from initial_delay_s to max_delay_s.

    It gives up after max_attempts reconnections in a row or max_total_s seconds without a frame,
    whichever comes first; None means no such limit (both None: retry for ever).
    """

    initial_delay_s: float = 0.5
    max_delay_s: float = 8.0
    max_attempts: int | None = 10
    max_total_s: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.initial_delay_s <= self.max_delay_s:
            raise ConfigError(f"reconnection delays must satisfy 0 < initial ({self.initial_delay_s} s) <= max ({self.max_delay_s} s)")
        if (self.max_attempts or 0) < 0 or (self.max_total_s or 0) < 0:
            raise ConfigError(f"reconnection limits must be >= 0, got {self.max_attempts} attempts and {self.max_total_s} s")

    def delay_s(self, attempt: int) -> float:
        """Delay before reconnection attempt `attempt` (1-based)."""
        return min(self.initial_delay_s * 2 ** (attempt - 1), self.max_delay_s)

    def exhausted(self, attempt: int, waited_s: float) -> bool:
        too_many = self.max_attempts is not None and attempt > self.max_attempts
        too_long = self.max_total_s is not None and waited_s >= self.max_total_s
        return too_many or too_long


def redact(uri: str) -> str:
    """A URI with its password replaced by *** (rtsp://user:secret@host -> rtsp://user:***@host)."""
    return re.sub(r"(://[^:/@\s]+):[^@/\s]*@", r"\1:***@", uri)


class Source:
    """Base of all sources: iterate for frames; `dropped` and `reconnects` count what happened."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.fps: float | None = None  # frame rate the source reports, if any (for a video sink)
        self.reconnects = 0
        self.closed = False

    @property
    def dropped(self) -> int:
        """Frames discarded because the consumer fell behind (only live sources drop)."""
        return 0

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FolderSource(Source):
    """Image files of a folder (and its subfolders) in sorted order, read with `read_image`."""

    def __init__(self, paths: list[Path], name: str, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(name)
        self.paths = paths
        self._clock = clock

    def __iter__(self) -> Iterator[Frame]:
        start = self._clock()
        for index, path in enumerate(self.paths):
            if self.closed:
                return
            yield Frame(index, self._clock() - start, read_image(path), str(path))


class VideoFileSource(Source):
    """Every frame of a video file, read on the caller's thread (nothing dropped); ends at the file's end."""

    def __init__(self, capture: Any, name: str) -> None:
        super().__init__(name)
        self._capture = capture
        self.fps = _reported_fps(capture)

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        while not self.closed:
            ok, pixels = self._capture.read()
            if not ok or pixels is None:
                return
            timestamp_s = self._capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            yield Frame(index, timestamp_s, to_rgb(pixels, self.name), self.name)
            index += 1

    def close(self) -> None:
        if not self.closed:
            self._capture.release()
        super().close()


class DropOldestBuffer:
    """A bounded hand-over between one producer thread and one consumer: a full buffer drops its oldest item."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"buffer capacity must be >= 1, got {capacity}")
        self._items: deque = deque(maxlen=capacity)
        self._ready = threading.Condition()
        self._finished = False
        self.dropped = 0

    def put(self, item: Any) -> None:
        with self._ready:
            if len(self._items) == self._items.maxlen:
                self.dropped += 1
            self._items.append(item)  # deque(maxlen) discards the oldest
            self._ready.notify()

    def finish(self) -> None:
        """No more items will come; a waiting consumer wakes up."""
        with self._ready:
            self._finished = True
            self._ready.notify_all()

    def get(self) -> Any | None:
        """The oldest buffered item; None once the producer finished and the buffer is empty."""
        with self._ready:
            while not self._items and not self._finished:
                self._ready.wait(0.5)  # a timeout keeps Ctrl-C responsive on every platform
            return self._items.popleft() if self._items else None

    def __len__(self) -> int:
        return len(self._items)


class LiveSource(Source):
    """A camera or stream read on a background thread; reconnects with back-off when reads fail."""

    def __init__(
        self,
        target: int | str,
        name: str,
        capture_factory: CaptureFactory,
        api_preference: int = cv2.CAP_ANY,
        buffer_frames: int = 2,
        reconnect: ReconnectPolicy | None = None,
        sleep: Callable[[float], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name)
        self._target, self._api, self._factory = target, api_preference, capture_factory
        self._policy = reconnect or ReconnectPolicy()
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait  # the default wakes up at once when closed
        self._clock = clock
        self._buffer = DropOldestBuffer(buffer_frames)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.reconnect_attempts = 0
        self._capture = capture_factory(target, api_preference)
        if not self._capture.isOpened():
            self._capture.release()
            raise DataError(_cannot_open(target, name))
        self.fps = _reported_fps(self._capture)

    @property
    def dropped(self) -> int:
        return self._buffer.dropped

    def __iter__(self) -> Iterator[Frame]:
        if self._thread is None and not self.closed:
            self._thread = threading.Thread(target=self._run, name=f"edgead-source {self.name}", daemon=True)
            self._thread.start()
        while (frame := self._buffer.get()) is not None:
            yield frame
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            self._read_until_stopped()
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self._error = exc
        finally:
            self._capture.release()
            self._buffer.finish()

    def _read_until_stopped(self) -> None:
        start, index, failures, failing_since = self._clock(), 0, 0, 0.0
        while not self._stop.is_set():
            ok, pixels = self._capture.read()
            if ok and pixels is not None:
                if failures:
                    self.reconnects += 1
                    log.warning("%s: frames again after %d reconnection attempt(s)", self.name, failures)
                failures = 0
                self._buffer.put(Frame(index, self._clock() - start, to_rgb(pixels, self.name), self.name))
                index += 1
                continue
            if failures == 0:
                failing_since = self._clock()
            failures += 1
            self._back_off(failures, self._clock() - failing_since)

    def _back_off(self, attempt: int, waited_s: float) -> None:
        if self._policy.exhausted(attempt, waited_s):
            raise DataError(
                f"{self.name} stopped delivering frames; gave up after {attempt - 1} reconnection attempts "
                f"over {waited_s:.1f} s — check the camera's cable and power or the stream's network, "
                "then run again"
            )
        delay_s = self._policy.delay_s(attempt)
        limit = self._policy.max_attempts or "unlimited"
        log.warning("%s: no frame; reconnection attempt %d/%s in %.1f s", self.name, attempt, limit, delay_s)
        self._sleep(delay_s)
        if self._stop.is_set():
            return
        self._capture.release()
        self._capture = self._factory(self._target, self._api)
        self.reconnect_attempts += 1

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        self._stop.set()
        if self._thread is None:
            self._capture.release()
        else:
            self._thread.join(timeout=5.0)
            if self._thread.is_alive():  # a driver blocked in read(); the thread releases it when it returns
                log.warning("%s: the capture thread did not stop within 5 s", self.name)


def _reported_fps(capture: Any) -> float | None:
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    return fps if 0 < fps < 1000 else None


def _cannot_open(target: int | str, name: str) -> str:
    if isinstance(target, int):
        return (
            f"camera {target} could not be opened — check that it is connected, not used by another program, "
            f"and that you may read /dev/video{target} (list cameras with `v4l2-ctl --list-devices`)"
        )
    return (
        f"could not open the stream {name} — check the address, credentials and network, and that this "
        "OpenCV build supports it (FFmpeg for rtsp/http, GStreamer for pipelines: see cv2.getBuildInformation())"
    )


def open_source(
    spec: int | str | Path,
    *,
    capture_factory: CaptureFactory = cv2.VideoCapture,
    buffer_frames: int = 2,
    reconnect: ReconnectPolicy | None = None,
    sleep: Callable[[float], Any] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Source:
    """Open a camera index (7 or "7"), a video file, an image folder or file, or a URI / GStreamer pipeline."""
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        index = int(spec)
        return LiveSource(index, f"camera {index}", capture_factory, cv2.CAP_ANY, buffer_frames, reconnect, sleep, clock)
    text = str(spec)
    if "://" in text or " ! " in text:
        api = cv2.CAP_GSTREAMER if " ! " in text else cv2.CAP_ANY
        return LiveSource(text, redact(text), capture_factory, api, buffer_frames, reconnect, sleep, clock)
    path = Path(text)
    if path.is_dir():
        return FolderSource(list_images(path), str(path), clock)
    if not path.is_file():
        raise DataError(f"source {text} is not a camera index, an existing file or folder, or a URI — check the path")
    if is_image_path(path):
        return FolderSource([path], str(path), clock)
    capture = capture_factory(str(path), cv2.CAP_ANY)
    if not capture.isOpened():
        capture.release()
        raise DataError(f"video file {path} could not be opened — it is not a video this OpenCV build decodes (try an .mp4 or .avi)")
    return VideoFileSource(capture, str(path))
