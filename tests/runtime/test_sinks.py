"""Sinks: event log lines, boxes from a map, a readable video, saved frames, the headless window error, a full disk."""

import errno
import json
from datetime import datetime, timezone
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from edgead.errors import ConfigError
from edgead.runtime.images import read_image
from edgead.runtime.sinks import (
    AnomalySaver,
    EventLog,
    Result,
    SinkError,
    VideoSink,
    WindowSink,
    anomaly_boxes,
    gui_problem,
)
from edgead.runtime.sources import Frame


def make_result(index: int, score: float, threshold: float = 1.0, hw=(48, 64), boxes=None) -> Result:
    image = np.full((*hw, 3), 90, np.uint8)
    anomaly_map = np.zeros((16, 16), np.float32)
    anomaly_map[4:8, 4:8] = score
    boxes = boxes if boxes is not None else ([[12, 12, 16, 12]] if score > threshold else [])
    return Result(Frame(index, index / 10, image, "test"), score, threshold, score > threshold, boxes, anomaly_map, 0.0, 12.5)


def test_anomaly_boxes_from_a_synthetic_map():
    amap = np.zeros((32, 40), np.float32)
    amap[5:15, 20:26] = 2.0  # a 6 x 10 region
    amap[30, 2] = 2.0  # a single pixel: below min_area_px
    amap[20:22, 30:33] = 0.9  # below the threshold
    assert anomaly_boxes(amap, 1.0, min_area_px=4) == [[20, 5, 6, 10]]
    assert anomaly_boxes(amap, 1.0, min_area_px=1) == [[20, 5, 6, 10], [2, 30, 1, 1]]
    assert anomaly_boxes(np.zeros((8, 8), np.float32), 1.0) == []


def test_anomaly_boxes_scale_to_the_frame():
    amap = np.zeros((16, 16), np.float32)
    amap[4:8, 2:6] = 5.0
    # frame 64 high, 128 wide: 4x vertically, 8x horizontally; area 16 map px = 512 frame px
    assert anomaly_boxes(amap, 1.0, min_area_px=16, frame_hw=(64, 128)) == [[16, 16, 32, 16]]
    assert anomaly_boxes(amap, 1.0, min_area_px=600, frame_hw=(64, 128)) == []


def test_event_log_writes_one_line_per_anomalous_frame(tmp_path):
    path = tmp_path / "logs" / "events.jsonl"
    with EventLog(path) as log:
        for index, score in enumerate([0.5, 1.5, 0.9, 2.25]):
            log.write(make_result(index, score))
            if score > 1:
                assert path.read_text().count("\n") == log.events  # flushed per line, before close
    assert log.closed
    log.close()  # idempotent
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["frame"] for line in lines] == [1, 3]
    assert [line["score"] for line in lines] == [1.5, 2.25]
    assert all(line["threshold"] == 1.0 and line["boxes"] == [[12, 12, 16, 12]] for line in lines)
    when = datetime.fromisoformat(lines[0]["time"])
    assert when.utcoffset().total_seconds() == 0 and abs((datetime.now(timezone.utc) - when).total_seconds()) < 60
    with EventLog(path) as log:  # a second run appends
        log.write(make_result(7, 3.0))
    assert len(path.read_text().splitlines()) == 3


class DiskFullAfter:
    """A raw file that accepts `budget` bytes, then writes part of the next chunk and raises ENOSPC."""

    def __init__(self, path, budget):
        self.real = open(path, "ab", buffering=0)
        self.budget = budget

    def write(self, data):
        if len(data) > self.budget:
            self.real.write(bytes(data[: self.budget]))  # a partial line reaches the disk
            self.budget = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.budget -= len(data)
        return self.real.write(data)

    def tell(self):
        return self.real.tell()

    def truncate(self, size):
        return self.real.truncate(size)

    def fileno(self):
        return self.real.fileno()

    def close(self):
        self.real.close()


def test_full_disk_is_a_clear_error_and_earlier_events_stay_valid(tmp_path):
    path = tmp_path / "events.jsonl"
    log = EventLog(path, open_file=lambda p: DiskFullAfter(p, budget=250))
    with pytest.raises(SinkError, match=r"the disk is full while writing .*events\.jsonl; the \d events before it are intact"):
        with log:
            for index in range(10):
                log.write(make_result(index, 2.0))
    assert log.closed
    lines = path.read_text().splitlines()
    assert 0 < len(lines) == log.events < 10
    assert [json.loads(line)["frame"] for line in lines] == list(range(len(lines)))  # no partial last line
    assert path.read_bytes().endswith(b"\n")


def test_event_log_in_an_unwritable_place_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SinkError, match="cannot open the event log"):
        EventLog(tmp_path / "file" / "events.jsonl")


def test_video_sink_writes_a_readable_file(tmp_path):
    path = tmp_path / "out" / "annotated.mp4"
    with VideoSink(path, fps=10) as sink:
        for index in range(8):
            hw = (48, 64) if index != 5 else (30, 40)  # a frame of another size is resized, not dropped
            sink.write(make_result(index, 2.0 if index % 3 == 0 else 0.5, hw=hw))
    sink.close()
    capture = cv2.VideoCapture(str(path))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(10.0)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    assert len(frames) == 8 and frames[0].shape == (48 + 16 + 18, 64, 3)  # banner above, colour bar below
    top = frames[0][:3].reshape(-1, 3).mean(axis=0)  # NG banner is red: BGR (30, 30, 200) under white text
    assert top[2] > top[0] + 60 and top[2] > top[1] + 60


def test_video_sink_falls_back_to_avi_then_fails_clearly(tmp_path):
    opened = []

    def fussy(path, fourcc, fps, size):
        opened.append(path)
        return cv2.VideoWriter(path, fourcc, fps, size) if path.endswith(".avi") else SimpleNamespace(isOpened=lambda: False, release=lambda: None)

    with VideoSink(tmp_path / "v.mp4", fps=5, writer_factory=fussy) as sink:
        sink.write(make_result(0, 0.5))
    assert sink.path == tmp_path / "v.avi" and sink.path.stat().st_size > 0
    never = lambda *a: SimpleNamespace(isOpened=lambda: False, release=lambda: None)  # noqa: E731
    # the annotated frame: 48 px of image, a 16 px banner above and an 18 px colour bar below
    with pytest.raises(SinkError, match=r"could not open .*v2\.mp4 for a 64x82 video \(tried mp4v, MJPG\)"):
        with VideoSink(tmp_path / "v2.mp4", writer_factory=never) as sink:
            sink.write(make_result(0, 0.5))


def test_video_sink_stops_before_the_disk_is_full(tmp_path):
    free = {"bytes": 1 << 30}
    usage = lambda _: SimpleNamespace(free=free["bytes"])  # noqa: E731
    path = tmp_path / "v.mp4"
    with pytest.raises(SinkError, match="only 10 MB free; stopped the video after 256 frames"):
        with VideoSink(path, fps=10, disk_usage=usage, min_free_bytes=64 << 20) as sink:
            for index in range(300):
                if index == 256:
                    free["bytes"] = 10 << 20
                sink.write(make_result(index, 0.5))
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened() and int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 256  # finalised, playable
    capture.release()


def test_anomaly_saver_saves_annotated_anomalous_frames(tmp_path):
    with AnomalySaver(tmp_path / "ng") as saver:
        for index, score in enumerate([0.5, 2.0, 0.2, 3.0]):
            saver.write(make_result(index, score))
    files = sorted((tmp_path / "ng").iterdir())
    assert [f.name.endswith(f"Z_frame{i:08d}.png") for f, i in zip(files, [1, 3])] == [True, True]
    assert saver.saved == 2
    image = read_image(files[0])
    assert image.shape == (48 + 16 + 18, 64, 3) and tuple(image[0, -1]) == (200, 30, 30)  # red NG banner


def test_anomaly_saver_full_disk_leaves_no_partial_file(tmp_path, monkeypatch):
    def full(path, image):
        path.write_bytes(b"\x89PNG partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("edgead.runtime.sinks.write_image", full)
    with AnomalySaver(tmp_path) as saver:
        with pytest.raises(SinkError, match="the disk is full while writing"):
            saver.write(make_result(0, 2.0))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(gui_problem() is None, reason="this machine can open windows")
def test_window_sink_without_a_gui_tells_to_pass_headless():
    with pytest.raises(ConfigError, match="--headless"):
        WindowSink()


def test_annotated_frame_has_banner_boxes_and_fps():
    result = make_result(3, 2.0, hw=(96, 128), boxes=[[40, 40, 20, 20]])
    out = result.annotated
    assert out is result.annotated  # drawn once
    banner_px = 16
    assert out.shape == (banner_px + 96 + 18, 128, 3) and tuple(out[0, -1]) == (200, 30, 30)  # the banner is above the frame
    assert tuple(out[banner_px + 40, 50]) == (255, 255, 255)  # the box outline
    assert (out != make_result(3, 0.5, hw=(96, 128)).annotated).any()
