"""Sources: video files to their end, folders in order, clear errors, reconnection with back-off, drop-oldest."""

import logging
import threading
import time

import cv2
import numpy as np
import pytest

from edgead.errors import ConfigError, DataError
from edgead.runtime.images import write_image
from edgead.runtime.sources import (
    DropOldestBuffer,
    FolderSource,
    LiveSource,
    ReconnectPolicy,
    VideoFileSource,
    open_source,
    redact,
    to_rgb,
)


def bgr_frame(value: int, hw=(24, 32)) -> np.ndarray:
    frame = np.zeros((*hw, 3), np.uint8)
    frame[:, :, 0] = value % 256  # blue channel carries the frame number
    return frame


class FakeCapture:
    """A VideoCapture stand-in: `frames` successful reads, then reads that fail (or no end: frames=None)."""

    def __init__(self, frames: int | None = 0, opened: bool = True, make=bgr_frame, read_delay_s: float = 0.0):
        self.remaining, self.opened, self.make, self.read_delay_s = frames, opened, make, read_delay_s
        self.reads = self.released = 0

    def isOpened(self):
        return self.opened

    def read(self):
        if self.read_delay_s:
            time.sleep(self.read_delay_s)
        if not self.opened or self.remaining == 0:
            return False, None
        self.reads += 1
        if self.remaining is not None:
            self.remaining -= 1
        return True, self.make(self.reads)

    def get(self, prop):
        return 25.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def release(self):
        self.released += 1


class FakeFactory:
    """Hands out the given captures in order, recording what was opened."""

    def __init__(self, *captures):
        self.captures, self.opened = list(captures), []

    def __call__(self, target, api):
        self.opened.append((target, api))
        return self.captures.pop(0) if self.captures else FakeCapture(opened=False)


class FakeTime:
    """sleep() records delays and advances the clock; nothing actually waits."""

    def __init__(self):
        self.now, self.delays = 0.0, []

    def sleep(self, seconds):
        self.delays.append(seconds)
        self.now += seconds

    def clock(self):
        return self.now


def write_video(path, n_frames, hw=(48, 64), fps=10.0):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (hw[1], hw[0]))
    assert writer.isOpened()
    for i in range(n_frames):
        frame = np.zeros((*hw, 3), np.uint8)
        frame[:, :, 2] = 200  # red in BGR
        frame[:, : 4 + 2 * i] = 255
        writer.write(frame)
    writer.release()


def test_video_file_is_read_to_its_end_as_rgb(tmp_path):
    path = tmp_path / "clip.mp4"
    write_video(path, 12)
    with open_source(str(path)) as source:
        assert isinstance(source, VideoFileSource) and source.fps == pytest.approx(10.0)
        frames = list(source)
    assert [f.index for f in frames] == list(range(12))
    assert all(f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8 for f in frames)
    right = frames[0].image[:, -8:].reshape(-1, 3).mean(axis=0)
    assert right[0] > 150 and right[2] < 60  # red stays red: BGR was turned into RGB
    stamps = [f.timestamp_s for f in frames]
    assert stamps == sorted(stamps) and stamps[-1] == pytest.approx(1.1, abs=0.01)
    assert source.closed and source.dropped == 0


def test_folder_source_reads_files_in_sorted_order(tmp_path):
    for name, value, size in [("b.png", 20, 16), ("a.png", 10, 32), ("c.jpg", 30, 24)]:
        write_image(tmp_path / name, np.full((size, size, 3), value, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    with open_source(tmp_path) as source:
        assert isinstance(source, FolderSource)
        frames = list(source)
    assert [f.source.rsplit("/", 1)[-1] for f in frames] == ["a.png", "b.png", "c.jpg"]
    assert [f.image.shape[0] for f in frames] == [32, 16, 24]  # sizes may differ; the predictor resizes
    assert [f.index for f in frames] == [0, 1, 2]


def test_camera_that_cannot_open_is_named():
    factory = FakeFactory(FakeCapture(opened=False))
    with pytest.raises(DataError, match=r"camera 7 could not be opened.*/dev/video7"):
        open_source("7", capture_factory=factory)
    assert factory.opened == [(7, cv2.CAP_ANY)]


def test_stream_that_cannot_open_is_named_without_its_password():
    with pytest.raises(DataError) as info:
        open_source("rtsp://admin:secret@10.0.0.5/stream1", capture_factory=FakeFactory(FakeCapture(opened=False)))
    assert "rtsp://admin:***@10.0.0.5/stream1" in str(info.value) and "secret" not in str(info.value)
    assert redact("http://host/x") == "http://host/x"


def test_gstreamer_pipeline_is_opened_with_gstreamer():
    factory = FakeFactory(FakeCapture(frames=1))
    pipeline = "videotestsrc num-buffers=1 ! videoconvert ! appsink"
    with open_source(pipeline, capture_factory=factory) as source:
        assert isinstance(source, LiveSource)
    assert factory.opened == [(pipeline, cv2.CAP_GSTREAMER)]


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="not a camera index, an existing file or folder, or a URI"):
        open_source(tmp_path / "nope.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    with pytest.raises(DataError, match="could not be opened"):
        open_source(tmp_path / "junk.mp4")


def test_live_source_reconnects_with_back_off_and_continues(caplog):
    fake = FakeTime()
    # 3 frames, then the camera vanishes: two reopenings fail, the third delivers 3 more frames
    # the endless camera reads at 100 fps (real time) so the 64-frame buffer cannot overflow before the test reads it
    endless = FakeCapture(frames=None, read_delay_s=0.01)
    factory = FakeFactory(FakeCapture(frames=3), FakeCapture(opened=False), FakeCapture(opened=False), endless)
    policy = ReconnectPolicy(initial_delay_s=0.5, max_delay_s=8.0, max_attempts=5)
    caplog.set_level(logging.WARNING, logger="edgead.runtime.sources")
    with open_source(0, capture_factory=factory, buffer_frames=64, reconnect=policy, sleep=fake.sleep, clock=fake.clock) as source:
        frames = []
        for frame in source:
            frames.append(frame)
            if len(frames) == 6:
                break
    assert [f.index for f in frames] == list(range(6))  # nothing lost: the buffer was large enough
    assert fake.delays == [0.5, 1.0, 2.0]
    assert source.reconnects == 1 and source.reconnect_attempts == 3
    attempts = [r.getMessage() for r in caplog.records if "no frame" in r.getMessage()]
    assert attempts == [f"camera 0: no frame; reconnection attempt {i}/5 in {d:.1f} s" for i, d in [(1, 0.5), (2, 1.0), (3, 2.0)]]


def test_replaced_captures_are_released():
    fake = FakeTime()
    first, second = FakeCapture(frames=1), FakeCapture(frames=None)
    with open_source(0, capture_factory=FakeFactory(first, second), sleep=fake.sleep, clock=fake.clock) as source:
        it = iter(source)
        next(it), next(it)
    assert first.released == 1 and second.released == 1


def test_live_source_gives_up_after_max_attempts():
    fake = FakeTime()
    policy = ReconnectPolicy(initial_delay_s=0.5, max_delay_s=4.0, max_attempts=6)
    source = open_source("1", capture_factory=FakeFactory(FakeCapture(frames=2)), reconnect=policy, sleep=fake.sleep, clock=fake.clock)
    got = []
    with pytest.raises(DataError, match=r"camera 1 stopped delivering frames; gave up after 6 reconnection attempts over 15\.5 s"):
        with source:
            for frame in source:
                got.append(frame.index)
    assert got == [0, 1]  # frames before the failure are delivered first
    assert fake.delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]  # doubling, capped at max_delay_s
    assert source.closed


def test_live_source_gives_up_after_max_time():
    fake = FakeTime()
    policy = ReconnectPolicy(initial_delay_s=1.0, max_delay_s=8.0, max_attempts=None, max_total_s=10.0)
    source = open_source(0, capture_factory=FakeFactory(FakeCapture(frames=0)), reconnect=policy, sleep=fake.sleep, clock=fake.clock)
    with pytest.raises(DataError, match="gave up after 4 reconnection attempts over 15.0 s"):
        list(source)
    assert fake.delays == [1.0, 2.0, 4.0, 8.0]


def test_close_interrupts_a_back_off_wait():
    policy = ReconnectPolicy(initial_delay_s=30.0, max_delay_s=30.0, max_attempts=None)
    source = open_source(0, capture_factory=FakeFactory(FakeCapture(frames=1)), reconnect=policy)  # real sleep
    it = iter(source)
    assert next(it).index == 0
    time.sleep(0.05)  # the reader is now waiting 30 s before reconnecting
    started = time.monotonic()
    source.close()
    source.close()  # idempotent
    assert time.monotonic() - started < 2.0
    assert not source._thread.is_alive()


def test_drop_oldest_buffer_keeps_the_newest():
    buffer = DropOldestBuffer(2)
    for i in range(5):
        buffer.put(i)
    buffer.finish()
    assert [buffer.get(), buffer.get(), buffer.get()] == [3, 4, None]
    assert buffer.dropped == 3


def test_slow_consumer_drops_oldest_frames_not_memory():
    camera = FakeCapture(frames=None, read_delay_s=0.001)
    with open_source(0, capture_factory=FakeFactory(camera), buffer_frames=2) as source:
        received = []
        for frame in source:
            received.append(frame.index)
            time.sleep(0.03)  # inference slower than the camera
            if len(received) == 10:
                break
        source.close()
        produced, buffered = camera.reads, len(source._buffer)
    assert received == sorted(received) and received[-1] - received[0] > 9  # later frames skip ahead
    assert source.dropped > 0
    assert produced == len(received) + buffered + source.dropped  # every frame is delivered, buffered or counted
    assert buffered <= 2


@pytest.mark.parametrize(
    "raw, expected",
    [
        (np.full((4, 5), 7, np.uint8), (7, 7, 7)),  # gray
        (np.full((4, 5, 1), 9, np.uint8), (9, 9, 9)),  # gray with a channel axis
        (np.dstack([np.full((4, 5), c, np.uint8) for c in (1, 2, 3, 255)]), (3, 2, 1)),  # BGRA
        (np.dstack([np.full((4, 5), c, np.uint16) for c in (257, 514, 65535)]), (255, 2, 1)),  # 16-bit BGR
    ],
)
def test_frames_are_converted_to_rgb_uint8(raw, expected):
    rgb = to_rgb(raw, "camera 0")
    assert rgb.shape == (4, 5, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == expected


def test_live_gray_and_bgra_frames_arrive_as_rgb():
    kinds = iter([np.full((6, 8), 50, np.uint8), np.dstack([np.full((6, 8), c, np.uint8) for c in (10, 20, 30, 0)])])
    camera = FakeCapture(frames=2, make=lambda _: next(kinds))
    fake = FakeTime()
    policy = ReconnectPolicy(max_attempts=0)
    with open_source(0, capture_factory=FakeFactory(camera), buffer_frames=8, reconnect=policy, sleep=fake.sleep, clock=fake.clock) as source:
        with pytest.raises(DataError, match="gave up"):
            frames = []
            for frame in source:
                frames.append(frame)
    assert [tuple(f.image[0, 0]) for f in frames] == [(50, 50, 50), (30, 20, 10)]
    assert all(f.image.shape == (6, 8, 3) for f in frames)


def test_unsupported_bit_depth_is_a_data_error():
    with pytest.raises(DataError, match="camera 0 stores float32 pixels"):
        to_rgb(np.zeros((4, 4, 3), np.float32), "camera 0")


def test_source_closes_idempotently_from_another_thread():
    source = open_source(0, capture_factory=FakeFactory(FakeCapture(frames=None, read_delay_s=0.001)))
    seen = []

    def consume():
        for frame in source:
            seen.append(frame.index)

    consumer = threading.Thread(target=consume)
    consumer.start()
    time.sleep(0.1)
    source.close()
    consumer.join(timeout=5)
    assert not consumer.is_alive() and seen


def test_reconnect_policy_rejects_impossible_settings():
    with pytest.raises(ConfigError, match="reconnection delays"):
        ReconnectPolicy(initial_delay_s=4.0, max_delay_s=1.0)
    with pytest.raises(ConfigError, match="reconnection limits"):
        ReconnectPolicy(max_attempts=-1)
