"""The live run loop with a tiny trained model: same scores as Predictor.predict, sinks fed, clean stops."""

import json
import time

import cv2
import numpy as np
import pytest
import torch

from edgead.artifact import read_artifact
from edgead.config import PatchCoreConfig
from edgead.errors import ConfigError, DataError
from edgead.export.bundle import write_trained
from edgead.kit.demo_data import make_demo_dataset
from edgead.kit.patchcore import fit_patchcore
from edgead.runtime.datasets import open_dataset
from edgead.runtime.images import read_image
from edgead.runtime.live import STAGES, LatencyHistogram, run_live
from edgead.runtime.predictor import Predictor
from edgead.runtime.sinks import AnomalySaver, EventLog, VideoSink, gui_problem
from edgead.runtime.sources import Frame, open_source

MODEL_PX = 64
FRAME_PX = 96  # frames larger than the model input: the loop resizes
N_FRAMES = 24


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    (root,) = make_demo_dataset(tmp_path_factory.mktemp("demo"), categories=("brick",), size_px=MODEL_PX,
                                n_train=12, n_test_good=4, n_test_defect=4, seed=0)
    return root


@pytest.fixture(scope="module")
def model_path(demo_root, tmp_path_factory):
    torch.set_num_threads(2)
    config = PatchCoreConfig(image_size_px=MODEL_PX, reflect_pad_px=16, coreset_fraction=0.25, holdout_fraction=0.25, batch_size=4)
    fitted = fit_patchcore(open_dataset(demo_root).train, config)
    path, _ = write_trained(fitted, tmp_path_factory.mktemp("model") / "tiny.edgead")
    return path


@pytest.fixture(scope="module")
def video_path(demo_root, tmp_path_factory):
    """A short clip alternating good and defective test images, upscaled to FRAME_PX."""
    images = [read_image(s.path) for s in open_dataset(demo_root).test]
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 15, (FRAME_PX, FRAME_PX))
    assert writer.isOpened()
    for i in range(N_FRAMES):
        writer.write(cv2.cvtColor(cv2.resize(images[i % len(images)], (FRAME_PX, FRAME_PX)), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.fixture
def predictor(model_path, video_path):
    """The tiny model with its threshold set to the clip's median score: about half the frames are NG."""
    with Predictor(read_artifact(model_path), backend="onnxruntime") as predictor:
        with open_source(video_path) as source:
            scores = [p.score for p in predictor.predict([f.image for f in source])]
        predictor.threshold = float(np.median(scores))
        yield predictor


def expected_scores(predictor, video_path):
    with open_source(video_path) as source:
        return [p.score for p in predictor.predict([f.image for f in source])]


def count_video_frames(path):
    capture = cv2.VideoCapture(str(path))
    n = 0
    while capture.read()[0]:
        n += 1
    capture.release()
    return n


class ScriptedSource:
    """Yields frames, then raises what it was told to (KeyboardInterrupt for Ctrl-C); records close()."""

    name = "scripted"

    def __init__(self, frames, then: BaseException):
        self.frames, self.then, self.closed = frames, then, 0

    def __iter__(self):
        yield from self.frames
        raise self.then

    def close(self):
        self.closed += 1


def test_run_live_over_a_video_scores_like_predict_and_feeds_every_sink(predictor, video_path, tmp_path):
    scores = expected_scores(predictor, video_path)
    anomalous = [i for i, s in enumerate(scores) if s > predictor.threshold]
    assert 0 < len(anomalous) < N_FRAMES
    sinks = [EventLog(tmp_path / "events.jsonl"), VideoSink(tmp_path / "out.mp4", fps=15), AnomalySaver(tmp_path / "ng")]
    summary = run_live(predictor, open_source(video_path), sinks, headless=True)

    assert (summary.frames, summary.anomalous, summary.stopped_by) == (N_FRAMES, len(anomalous), "end")
    assert summary.dropped == 0 and summary.reconnects == 0 and summary.fps > 0
    assert set(summary.stage_ms) == set(STAGES)
    assert all(0 <= ms["p95"] and 0 <= ms["mean"] for ms in summary.stage_ms.values())
    assert summary.stage_ms["inference"]["mean"] > 0 and summary.stage_ms["head"]["mean"] > 0
    assert all(sink.closed for sink in sinks)

    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [e["frame"] for e in events] == anomalous
    np.testing.assert_allclose([e["score"] for e in events], [scores[i] for i in anomalous], rtol=1e-5)
    for event in events:
        assert event["boxes"], "an NG frame has at least one region above the threshold"
        for x, y, w, h in event["boxes"]:
            assert 0 <= x < x + w <= FRAME_PX and 0 <= y < y + h <= FRAME_PX  # frame pixels, not model pixels
    assert len(list((tmp_path / "ng").glob("*.png"))) == len(anomalous)
    assert count_video_frames(tmp_path / "out.mp4") == N_FRAMES


def test_max_frames_and_periodic_reports(predictor, video_path):
    reports = []
    summary = run_live(predictor, open_source(video_path), report_every_s=0, max_frames=5, on_stats=reports.append)
    assert summary.frames == 5 and summary.stopped_by == "max_frames"
    assert [r.frames for r in reports] == [1, 2, 3, 4, 5]
    assert set(reports[-1].stage_ms) == set(STAGES) and reports[-1].fps > 0
    assert "fps" in reports[-1].line() and "inference" in reports[-1].line()
    assert any("stopped by max_frames" in line for line in summary.lines())


def test_ctrl_c_stops_cleanly_with_a_summary_and_closed_files(predictor, video_path, tmp_path):
    with open_source(video_path) as video:
        frames = list(video)[:6]
    source = ScriptedSource(frames, KeyboardInterrupt())
    events, video_sink = EventLog(tmp_path / "e.jsonl"), VideoSink(tmp_path / "v.mp4", fps=15)
    summary = run_live(predictor, source, [events, video_sink])
    assert summary.stopped_by == "interrupt" and summary.frames == len(frames)
    assert source.closed == 1 and events.closed and video_sink.closed
    lines = (tmp_path / "e.jsonl").read_text().splitlines()
    assert len(lines) == summary.anomalous and all(json.loads(line) for line in lines)
    assert count_video_frames(tmp_path / "v.mp4") == len(frames)  # finalised: the file plays


def test_an_error_mid_run_closes_everything_and_propagates(predictor, video_path, tmp_path):
    with open_source(video_path) as video:
        frames = list(video)[:3]
    source = ScriptedSource(frames, DataError("camera 0 stopped delivering frames"))
    events = EventLog(tmp_path / "e.jsonl")
    with pytest.raises(DataError, match="stopped delivering"):
        run_live(predictor, source, [events])
    assert source.closed == 1 and events.closed


@pytest.mark.skipif(gui_problem() is None, reason="this machine can open windows")
def test_a_window_without_a_gui_fails_before_the_first_frame(predictor, tmp_path):
    source = ScriptedSource([], AssertionError("no frame may be read"))
    events = EventLog(tmp_path / "e.jsonl")
    with pytest.raises(ConfigError, match="--headless"):
        run_live(predictor, source, [events], headless=False)
    assert source.closed == 1 and events.closed


def test_live_camera_slower_model_drops_frames(predictor, monkeypatch):
    infer = predictor.infer

    def slow_infer(batch):  # 10 ms a frame, whatever the machine: slower than the camera
        time.sleep(0.01)
        return infer(batch)

    monkeypatch.setattr(predictor, "infer", slow_infer)

    class Camera:  # a 1 ms camera: faster than the model, so the buffer drops the oldest
        def __init__(self, *args):
            self.n = 0

        def isOpened(self):
            return True

        def read(self):
            time.sleep(0.001)
            self.n += 1
            return True, np.full((FRAME_PX, FRAME_PX, 3), self.n % 256, np.uint8)

        def get(self, prop):
            return 0.0

        def release(self):
            pass

    source = open_source(0, capture_factory=Camera, buffer_frames=2)
    summary = run_live(predictor, source, max_frames=20)
    assert summary.frames == 20 and summary.dropped > 0 and source.closed


def test_latency_histogram_percentiles_are_close():
    hist = LatencyHistogram()
    values = np.random.default_rng(0).lognormal(1.0, 0.5, 5000)
    for v in values:
        hist.add(float(v))
    assert hist.mean_ms == pytest.approx(values.mean())
    assert hist.percentile_ms(95) == pytest.approx(np.percentile(values, 95), rel=0.03)
    assert hist.percentile_ms(100) == pytest.approx(values.max())
    assert LatencyHistogram().percentile_ms(95) == 0.0


def test_any_iterable_of_frames_of_any_size_is_a_source(predictor):
    frames = [Frame(i, 0.0, np.full((40 + 30 * i, 70, 3), 120, np.uint8), "sizes") for i in range(3)]
    summary = run_live(predictor, frames)
    assert summary.frames == 3 and summary.stopped_by == "end"


def test_periodic_line_and_summary_give_the_flagged_share_and_the_drift_state(predictor, video_path):
    from edgead.runtime.drift import DriftMonitor

    reports = []
    drift = DriftMonitor(reference=1e9, threshold=predictor.threshold, window_frames=4)
    summary = run_live(predictor, open_source(video_path), report_every_s=0, on_stats=reports.append, drift=drift)
    scores = expected_scores(predictor, video_path)
    flagged = sum(s > predictor.threshold for s in scores)
    assert reports[0].drift == "filling" and reports[-1].drift == "ok"
    assert f"{flagged / N_FRAMES:.0%} flagged" in reports[-1].line() and "drift ok" in reports[-1].line()
    assert reports[-1].window_frames == 1 and reports[-1].window_anomalous == (scores[-1] > predictor.threshold)
    assert summary.flagged_share == pytest.approx(flagged / N_FRAMES) and summary.drift == "ok" and not summary.storm
    assert f"({flagged / N_FRAMES:.1%} flagged), drift ok" in summary.lines()[0]
    assert summary.as_dict()["flagged_share"] == pytest.approx(flagged / N_FRAMES)


def test_a_false_alarm_storm_is_said_once_with_what_to_do(predictor, video_path, tmp_path, caplog):
    predictor.threshold = -1.0  # every frame NG, as when every good frame scores above a threshold set on lossless crops
    with caplog.at_level("WARNING"):
        summary = run_live(predictor, open_source(video_path), [EventLog(tmp_path / "e.jsonl")])
    records = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    storms = [r for r in records if r["event"] == "false_alarm_storm"]
    assert len(storms) == 1 and storms[0]["frames"] == N_FRAMES and storms[0]["flagged"] == N_FRAMES  # the clip is shorter than a window
    assert "edgead capture" in storms[0]["message"] and "enroll" in storms[0]["message"] and "train" in storms[0]["message"]
    assert sum("false-alarm storm" in r.getMessage() for r in caplog.records) == 1
    assert summary.storm and "false-alarm storm" in summary.lines()[0]


def test_the_storm_watch_judges_the_first_window_only():
    from edgead.runtime.drift import MIN_STORM_FRAMES, StormWatch

    watch = StormWatch(window_frames=10)
    events = [e for i in range(30) if (e := watch.update(i, i < 6 or i >= 10))]  # 6 of the first 10, then all NG
    assert len(events) == 1 and events[0].frame == 9 and events[0].flagged == 6 and events[0].share == pytest.approx(0.6)
    assert watch.finish(29) is None
    calm = StormWatch(window_frames=10)
    assert not [e for i in range(30) if (e := calm.update(i, i % 2 == 0))]  # half is not more than half
    short = StormWatch(window_frames=100)
    for i in range(MIN_STORM_FRAMES - 1):
        short.update(i, True)
    assert short.finish(MIN_STORM_FRAMES - 2) is None  # too few frames to say anything
    short.update(MIN_STORM_FRAMES - 1, True)
    assert short.finish(MIN_STORM_FRAMES - 1).flagged == MIN_STORM_FRAMES
