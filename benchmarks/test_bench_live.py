"""Overhead of the live run loop over pure inference on the same frames (batch 1, 256 px, CPU, ONNX Runtime).

Run: .venv/bin/python -m pytest benchmarks/test_bench_live.py --benchmark-only -s --benchmark-json=bench-live.json
The loop adds per-stage timing, boxes, statistics and the sink hand-over; sinks are off and no window opens.
"""

import cv2
import pytest

from edgead.artifact import read_artifact
from edgead.config import PatchCoreConfig
from edgead.export.bundle import write_trained
from edgead.kit.patchcore import fit_patchcore
from edgead.runtime.datasets import open_dataset
from edgead.runtime.images import read_image
from edgead.runtime.live import run_live
from edgead.runtime.predictor import Predictor
from edgead.runtime.sources import open_source

N_FRAMES = 48
BACKEND = "onnxruntime"
_median_s: dict[str, float] = {}  # benchmark name -> median seconds per pass over the frames, for the ratio


@pytest.fixture(scope="module")
def predictor(demo_root, tmp_path_factory, size_px):
    fitted = fit_patchcore(open_dataset(demo_root).train, PatchCoreConfig(image_size_px=size_px))
    path, _ = write_trained(fitted, tmp_path_factory.mktemp("m") / "live.edgead")
    with Predictor(read_artifact(path), backend=BACKEND) as predictor:
        yield predictor


@pytest.fixture(scope="module")
def video(demo_root, tmp_path_factory, size_px):
    """N_FRAMES test images as an MJPG clip at the model size, and its frames decoded once."""
    images = [read_image(s.path) for s in open_dataset(demo_root).test]
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (size_px, size_px))
    for i in range(N_FRAMES):
        writer.write(cv2.cvtColor(images[i % len(images)], cv2.COLOR_RGB2BGR))
    writer.release()
    with open_source(path) as source:
        frames = list(source)
    return path, frames


def _info(benchmark, machine, size_px, predictor, what):
    benchmark.extra_info.update(machine, backend=predictor.describe(), precision="fp32", batch=1,
                                size_px=size_px, frames=N_FRAMES, what=what)


def test_pure_predict_per_frame(benchmark, predictor, video, machine, size_px):
    """Reference: predictor.predict on each decoded frame, nothing else."""
    _, frames = video
    _info(benchmark, machine, size_px, predictor, "predict loop")
    benchmark.pedantic(lambda: [predictor.predict([f.image]) for f in frames], rounds=5, warmup_rounds=1)
    _median_s["predict"] = benchmark.stats.stats.median


def test_run_live_headless_no_sinks(benchmark, predictor, video, machine, size_px):
    """The run loop over the same decoded frames: stage timers, boxes, stats; no sinks, no window."""
    _, frames = video
    _info(benchmark, machine, size_px, predictor, "run_live, frames in memory")
    benchmark.pedantic(lambda: run_live(predictor, frames, report_every_s=None), rounds=5, warmup_rounds=1)
    _median_s["run_live"] = benchmark.stats.stats.median
    if "predict" in _median_s:  # medians: the CPU backends' thread pools make means noisy
        ratio = _median_s["run_live"] / _median_s["predict"]
        benchmark.extra_info["overhead_ratio_vs_predict"] = round(ratio, 4)
        print(f"\nrun_live / predict, median per frame: {ratio:.3f} "
              f"({_median_s['run_live'] / N_FRAMES * 1e3:.2f} ms vs {_median_s['predict'] / N_FRAMES * 1e3:.2f} ms)")


def test_run_live_from_video_file(benchmark, predictor, video, machine, size_px):
    """The whole loop as `edgead run --video --headless` runs it: decoding included."""
    path, _ = video
    _info(benchmark, machine, size_px, predictor, "run_live, MJPG video decoded on the fly")
    benchmark.pedantic(lambda: run_live(predictor, open_source(path), report_every_s=None), rounds=5, warmup_rounds=1)


def test_run_live_loop_cost_with_a_null_model(benchmark, machine):
    """The loop's own cost per frame: a backend and bank that return zeros at once (64 px, 8x8 feature grid)."""
    from types import SimpleNamespace

    import numpy as np

    from edgead.runtime.predictor import frame_maps, prepare_batch
    from edgead.runtime.postprocess import anomaly_maps
    from edgead.runtime.sources import Frame

    class NullPredictor:
        """The Predictor's stages with the engine and the head doing nothing: what is left is the loop."""

        size_px, blur_sigma_px, threshold, tiling = (64, 64), 4.0, 1.0, None
        artifact = SimpleNamespace(manifest={"postprocess": {}})
        backend = SimpleNamespace(describe=lambda: "null")

        def describe(self):
            return "null"

        def prepare(self, images):
            return prepare_batch(images, self.size_px, None)

        def infer(self, batch):
            return {"features": np.zeros((len(batch.images), 152, 8, 8), np.float32)}

        def head(self, outputs):
            return np.zeros((outputs["features"].shape[0], 8, 8), np.float32)

        def maps(self, scores, batch=None):
            return frame_maps(anomaly_maps(scores, self.size_px, self.blur_sigma_px), batch, None)

    null = NullPredictor()
    frames = [Frame(i, 0.0, np.zeros((64, 64, 3), np.uint8), "null") for i in range(2000)]
    benchmark.extra_info.update(machine, backend="null", size_px=64, frames=len(frames), what="run_live loop cost, no model work")
    benchmark.pedantic(lambda: run_live(null, frames, report_every_s=None), rounds=5, warmup_rounds=1)
    print(f"\nrun_live with a null model: {benchmark.stats.stats.median / len(frames) * 1e6:.1f} us per frame "
          "(resize, map upsampling and blur included)")
