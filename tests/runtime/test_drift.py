"""Drift in `run`: good frames that score, for a sustained window, above the good calibration raise one drift event."""

import json
import shutil

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edgead.cli import main
from edgead.errors import ConfigError
from edgead.runtime.drift import DriftMonitor
from edgead.runtime.images import read_image

HALF = 16  # frames in each half of the clip
WINDOW = 8


def brightened(image):
    # beyond what the calibration's nuisance copies cover (their light shifts count as good): x2 no longer leaves the
    # good range of the tiny model calibrated on them (median 35.1 against its 0.9 quantile 35.8), x2.5 does (39.3)
    return np.clip(image.astype(np.float32) * 2.5, 0, 255).astype(np.uint8)


def recompressed(image):
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 8])
    assert ok
    return cv2.imdecode(data, cv2.IMREAD_UNCHANGED)


@pytest.mark.parametrize("change", [brightened, recompressed])
def test_a_video_whose_second_half_changed_raises_drift_there_and_only_there(tiny_trained, tiny_data_root, tmp_path, change):
    _, path = tiny_trained
    model = shutil.copy(path, tmp_path / "m.edgead")
    goods = [read_image(p) for p in sorted((tiny_data_root / "test" / "good").iterdir())]
    video = tmp_path / "line.avi"
    height, width = goods[0].shape[:2]
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"FFV1"), 10, (width, height))  # lossless: the change is the only one
    assert writer.isOpened()
    for i in range(2 * HALF):
        image = goods[i % len(goods)]
        writer.write(cv2.cvtColor(image if i < HALF else change(image), cv2.COLOR_RGB2BGR))
    writer.release()
    events = tmp_path / "events.jsonl"
    result = CliRunner().invoke(main, ["run", "--video", str(video), "--model", str(model), "--headless", "--events", str(events),
                                       "--drift-window", str(WINDOW), "--report-every", "0"])
    assert result.exit_code == 0, result.output
    drift = [e for e in map(json.loads, events.read_text().splitlines()) if e.get("event") == "drift"]
    assert len(drift) == 1, drift
    assert drift[0]["frame"] >= HALF  # none in the first half
    assert drift[0]["median_score"] > drift[0]["reference"]
    assert "edgead capture" in drift[0]["message"] and "enroll" in drift[0]["message"]  # says what to do
    assert "drift: the median score" in result.output  # on stderr too (CliRunner mixes the streams)


def test_monitor_raises_once_then_clears_after_a_quiet_window():
    monitor = DriftMonitor(reference=10.0, threshold=12.0, window_frames=4)
    scores = [9.0] * 6 + [11.0] * 10 + [9.0] * 10
    events = [(i, e.event) for i, s in enumerate(scores) if (e := monitor.update(i, s))]
    assert [name for _, name in events] == ["drift", "drift_cleared"]
    assert 6 <= events[0][0] < 16 and events[1][0] >= 16
    assert monitor.events == 2


def test_monitor_ignores_a_few_defective_frames():
    monitor = DriftMonitor(reference=10.0, threshold=12.0, window_frames=5)
    scores = [9.0, 30.0, 9.0, 9.0, 30.0] * 6  # two NG frames in five: the median stays good
    assert not [e for i, s in enumerate(scores) if (e := monitor.update(i, s))]


def test_window_below_two_frames_is_refused():
    with pytest.raises(ConfigError, match="--drift-window"):
        DriftMonitor(10.0, 12.0, window_frames=1)
