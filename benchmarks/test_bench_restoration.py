"""Restoration of a vq-restore model, per frame: edgead's parallel passes against the exact raster-order method.

Three restorations of the same code grids, each followed by the same decoding and bilateral filter
(the whole `restoration` head, ONNX Runtime FP32 on the CPU, one frame at a time as from a camera):

* `parallel` — edgead's: at most the model's passes, every unlikely code replaced at once;
* `exact` — the paper's decisions in raster order, with a prior pass only after a code changed
  (1 + replaced codes passes per frame);
* `literal` — the paper's loop as written: a prior pass at every position (h * w per frame). It
  replaces the same codes as `exact` (checked here), so it only measures what the loop costs.

The model: `EDGEAD_VQ_MODEL` (a trained vq-restore model) scored on the test images under
`EDGEAD_VQ_DATA` (an MVTec-layout category), e.g. for the README's figures:
    EDGEAD_VQ_MODEL=vq-brick.edgead EDGEAD_VQ_DATA=demo/data/brick \\
        python -m pytest benchmarks/test_bench_restoration.py --benchmark-only -s
Without them, a small model is trained on the benchmark's demo brick (2 + 2 epochs: its speed is a
real model's, its accuracy is not). `EDGEAD_VQ_LITERAL_FRAMES` (default 4) bounds the frames the
literal loop runs on; the other two run on every test frame, or `EDGEAD_VQ_FRAMES` evenly spaced, in
`EDGEAD_VQ_ROUNDS` rounds (default 3; the literal loop runs one). Timings are per frame.
"""

import os
from pathlib import Path

import numpy as np
import pytest

from edgead.artifact import read_artifact
from edgead.runtime.datasets import open_dataset
from edgead.runtime.images import read_image
from edgead.runtime.predictor import Predictor
from edgead.runtime.restoration import restore_exact

MODES = ("parallel", "exact", "literal")


@pytest.fixture(scope="module")
def vq_model(demo_root, tmp_path_factory):
    given = os.environ.get("EDGEAD_VQ_MODEL")
    if given:
        artifact = read_artifact(Path(given))
        if artifact.manifest["restoration"].get("map", "restoration") != "restoration":
            pytest.skip(f"{given} scores by code likelihood (no restoration to time): give a model trained with --anomaly-map restoration")
        return artifact, Path(os.environ.get("EDGEAD_VQ_DATA", demo_root))
    from edgead.export.bundle import write_trained
    from edgead.kit.vq_config import VQRestoreConfig
    from edgead.kit.vq_restore import DETECTOR

    config = VQRestoreConfig(latents="pixels", epochs=2, prior_epochs=2, eta=1e-3, anomaly_map="restoration")
    trained = DETECTOR.fit(open_dataset(demo_root).train, config)
    path, _ = write_trained(trained, tmp_path_factory.mktemp("vq") / "vq.edgead", formats=("onnx",))
    return read_artifact(path), demo_root


@pytest.fixture(scope="module")
def frames(vq_model):
    _, data = vq_model
    samples = open_dataset(data).test
    limit = os.environ.get("EDGEAD_VQ_FRAMES")
    if limit:  # evenly spaced over the test set: good frames and every defect type
        samples = [samples[i] for i in np.linspace(0, len(samples) - 1, int(limit)).round().astype(int)]
    return [read_image(sample.path) for sample in samples]


@pytest.fixture(scope="module")
def codes(vq_model, frames):
    """Each frame's code grids (one grid per frame at the image level, one per patch at the patch level)."""
    artifact, _ = vq_model
    with Predictor(artifact, "onnxruntime") as predictor:
        return [np.asarray(predictor.infer(predictor.prepare([frame]))["codes"]) for frame in frames]


@pytest.fixture(scope="module")
def restored(vq_model, codes):
    """What each mode restores per frame, filled in as the benchmarks run (the literal loop is checked against exact)."""
    return {}


def _head(predictor, mode):
    head = predictor.scoring_head
    if mode == "literal":
        head.mode = "exact"
        head.restore = lambda grid: restore_exact(np.asarray(grid, dtype=np.int64), head.prior_log_probs, head.eta, head.seed, head.resample, literal=True)
    else:
        head.mode = mode
    return head


@pytest.mark.parametrize("mode", MODES)
def test_restoration_per_frame(benchmark, vq_model, codes, restored, machine, mode):
    artifact, data = vq_model
    frames = codes if mode != "literal" else codes[: int(os.environ.get("EDGEAD_VQ_LITERAL_FRAMES", "4"))]
    with Predictor(artifact, "onnxruntime") as predictor:
        head = _head(predictor, mode)
        results = []

        def run_all():
            results.clear()
            for grid in frames:
                head.score({"codes": grid})
                results.append(head.last)

        benchmark.pedantic(run_all, rounds=1 if mode == "literal" else int(os.environ.get("EDGEAD_VQ_ROUNDS", "3")), iterations=1, warmup_rounds=0)
    restored[mode] = results
    if mode == "literal":  # the paper's loop replaces exactly what the exact restoration replaces
        for fast, slow in zip(restored.get("exact", []), results):
            np.testing.assert_array_equal(slow.codes, fast.codes)
    per_frame_s = benchmark.stats.stats.median / len(frames)
    benchmark.extra_info.update(
        machine, backend="onnxruntime", precision="fp32", mode=mode, data=str(data), frames=len(frames),
        grids_per_frame=int(frames[0].shape[0]), grid=list(frames[0].shape[1:]), eta=head.eta,
        prior_passes_per_frame=float(np.mean([r.passes.max() for r in results])),
        codes_replaced_per_frame=float(np.mean([r.changed.sum() for r in results])),
        ms_per_frame=1000 * per_frame_s,
    )
    print(f"\n{mode}: {1000 * per_frame_s:.1f} ms per frame over {len(frames)} frames, "
          f"{benchmark.extra_info['prior_passes_per_frame']:.1f} prior passes, {benchmark.extra_info['codes_replaced_per_frame']:.1f} codes replaced")
