"""Soak: 10,000 frames of a small video through the live loop with an event log; memory must stay flat."""

import json
import os
import time
from itertools import islice

import cv2
import numpy as np
import pytest
import torch

from edgead.artifact import read_artifact
from edgead.config import PatchCoreConfig
from edgead.export.bundle import write_trained
from edgead.kit.demo_data import make_demo_dataset
from edgead.kit.patchcore import fit_patchcore
from edgead.runtime.datasets import open_dataset
from edgead.runtime.images import read_image
from edgead.runtime.live import run_live
from edgead.runtime.predictor import Predictor
from edgead.runtime.sinks import EventLog
from edgead.runtime.sources import open_source

MODEL_PX = 64
N_FRAMES = 10_000
WARM_UP_FRAMES = 500
MAX_GROWTH_MB = 50


def resident_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.fixture(scope="module")
def model_and_video(tmp_path_factory):
    torch.set_num_threads(2)
    (root,) = make_demo_dataset(tmp_path_factory.mktemp("demo"), categories=("brick",), size_px=MODEL_PX,
                                n_train=12, n_test_good=4, n_test_defect=4, seed=0)
    config = PatchCoreConfig(image_size_px=MODEL_PX, reflect_pad_px=16, coreset_fraction=0.25, holdout_fraction=0.25, batch_size=4)
    model, _ = write_trained(fit_patchcore(open_dataset(root).train, config), tmp_path_factory.mktemp("model") / "tiny.edgead")
    images = [cv2.cvtColor(read_image(s.path), cv2.COLOR_RGB2BGR) for s in open_dataset(root).test]
    video = tmp_path_factory.mktemp("video") / "soak.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30, (MODEL_PX, MODEL_PX))
    assert writer.isOpened()
    for i in range(N_FRAMES):
        writer.write(images[i % len(images)])
    writer.release()
    return model, video


class ResidentMemoryProbe:
    """Passes frames through and notes resident memory once the loop is warm."""

    def __init__(self, source):
        self.source, self.name, self.warm_mb = source, source.name, None

    def __iter__(self):
        for frame in self.source:
            if frame.index == WARM_UP_FRAMES:
                self.warm_mb = resident_mb()
            yield frame

    def close(self):
        self.source.close()


@pytest.mark.slow
def test_soak_10k_frames_memory_stays_flat(model_and_video, tmp_path, record_property):
    model, video = model_and_video
    with Predictor(read_artifact(model), backend="onnxruntime") as predictor:
        with open_source(video) as first:  # the clip cycles through 8 images: half of its frames are NG
            predictor.threshold = float(np.median([p.score for p in predictor.predict([f.image for f in islice(first, 8)])]))
        probe = ResidentMemoryProbe(open_source(video))
        started = time.perf_counter()
        summary = run_live(predictor, probe, [EventLog(tmp_path / "events.jsonl")], headless=True)
        duration_s = time.perf_counter() - started
        growth_mb = resident_mb() - probe.warm_mb

    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    record_property("soak_duration_s", round(duration_s, 1))
    record_property("soak_rss_growth_mb", round(growth_mb, 2))
    print(f"\nsoak: {summary.frames} frames in {duration_s:.1f} s ({summary.fps:.0f} fps), "
          f"{len(lines)} events, resident memory +{growth_mb:.1f} MB after warm-up")
    for line in summary.lines():
        print(line)
    assert summary.frames == N_FRAMES and summary.stopped_by == "end"
    assert len(lines) == summary.anomalous and json.loads(lines[-1])["frame"] < N_FRAMES
    assert growth_mb < MAX_GROWTH_MB
