"""`edgead capture`: frames saved from a source are exactly the frames `run` scores."""

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edgead.artifact import read_artifact
from edgead.cli import main
from edgead.runtime.capture import capture_frames
from edgead.runtime.images import list_images, read_image
from edgead.runtime.live import run_live
from edgead.runtime.predictor import Predictor
from edgead.runtime.sinks import Sink
from edgead.runtime.sources import Frame, open_source

N_FRAMES = 12


@pytest.fixture(scope="module")
def clip(tiny_data_root, tmp_path_factory):
    """A lossy (MJPG) clip of good test images at 160x144 px: decoded frames differ from the PNGs it was made from."""
    images = [read_image(p) for p in sorted((tiny_data_root / "test" / "good").iterdir())]
    path = tmp_path_factory.mktemp("clip") / "line.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 144))
    assert writer.isOpened()
    for i in range(N_FRAMES):
        writer.write(cv2.cvtColor(cv2.resize(images[i % len(images)], (160, 144)), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


class Recorder(Sink):
    def __init__(self):
        self.results = []

    def write(self, result):
        self.results.append(result)


def test_captured_frames_are_what_run_scores(tiny_trained, clip, tmp_path):
    result = CliRunner().invoke(main, ["capture", str(clip), "--out", str(tmp_path / "good"), "--count", "100"])
    assert result.exit_code == 0, result.output
    assert f"captured {N_FRAMES} frames (160x144 px" in result.output and "edgead enroll" in result.output
    captured = list_images(tmp_path / "good")
    assert len(captured) == N_FRAMES and all(p.suffix == ".png" for p in captured)

    recorder = Recorder()
    with Predictor(read_artifact(tiny_trained[1])) as predictor:
        run_live(predictor, open_source(clip), [recorder])
        rescored = predictor.predict([read_image(p) for p in captured])
    assert len(recorder.results) == N_FRAMES
    for path, live, again in zip(captured, recorder.results, rescored):
        assert np.array_equal(read_image(path), live.frame.image)  # lossless: the very pixels run decoded
        assert again.score == pytest.approx(live.score, rel=1e-6)


def test_capture_spaces_frames_and_stops_at_count(tmp_path):
    frames = [Frame(i, i * 0.1, np.full((8, 8, 3), i, np.uint8), "fake") for i in range(30)]
    summary = capture_frames(frames, tmp_path, count=4, every_s=0.5, prefix="c")
    assert [p.name for p in summary.saved] == ["c-000000.png", "c-000001.png", "c-000002.png", "c-000003.png"]
    assert [int(read_image(p)[0, 0, 0]) for p in summary.saved] == [0, 5, 10, 15]
    assert summary.stopped_by == "count" and summary.sizes_hw == ((8, 8),)


def test_capture_of_a_missing_source_is_one_clear_line(tmp_path):
    result = CliRunner().invoke(main, ["capture", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "is not a camera index, an existing file or folder, or a URI" in result.output
