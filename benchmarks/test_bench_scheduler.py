"""Patch scheduler on a CUDA GPU: tiled 2048x2048 frames, FP16 TorchScript, 1/2/4 streams vs a synchronous loop.

Skipped where torch sees no CUDA device. Run on a GPU machine:
    python -m pytest benchmarks/test_bench_scheduler.py --benchmark-only --benchmark-json=scheduler.json
The aim: the best stream count at least 1.3x the synchronous loop's throughput.
"""

import numpy as np
import pytest
import torch

from edgead.artifact import read_artifact
from edgead.config import PatchCoreConfig
from edgead.export.bundle import write_trained
from edgead.export.stage import export_model
from edgead.kit.patchcore import fit_patchcore
from edgead.runtime.datasets import open_dataset
from edgead.runtime.predictor import Predictor, Tiling

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

FRAME_PX = 2048
TILE_PX = 256
BATCH = 8


@pytest.fixture(scope="module")
def fp16_model(demo_root, tmp_path_factory):
    fitted = fit_patchcore(open_dataset(demo_root).train, PatchCoreConfig(image_size_px=TILE_PX))
    path, _ = write_trained(fitted, tmp_path_factory.mktemp("gpu") / "m.edgead", formats=("onnx",))
    export_model(path, "fp16", "torchscript")
    return read_artifact(path)


@pytest.fixture(scope="module")
def frame():
    return np.random.default_rng(0).integers(0, 256, (FRAME_PX, FRAME_PX, 3), dtype=np.uint8)


def _info(benchmark, streams):
    benchmark.extra_info.update(
        device=torch.cuda.get_device_name(0), backend="torchscript", precision="fp16", frame_px=FRAME_PX,
        tile_px=TILE_PX, tiles=(FRAME_PX // TILE_PX) ** 2, batch=BATCH, streams=streams,
    )


def test_synchronous_loop(benchmark, fp16_model, frame):
    """Baseline: every batch copied in, run and copied out before the next starts (backend.infer)."""
    _info(benchmark, "sync")
    with Predictor(fp16_model, "torchscript", "cuda", "fp16", tiling=Tiling(TILE_PX, TILE_PX), max_batch=BATCH, trust_code=True) as p:
        def run():
            batch = p.prepare([frame])
            features = np.concatenate([p.backend.infer(batch.images[i : i + BATCH]) for i in range(0, len(batch.images), BATCH)])
            return p.maps(p.head({"features": features}), batch)

        benchmark(run)


@pytest.mark.parametrize("streams", [1, 2, 4])
def test_scheduler_streams(benchmark, fp16_model, frame, streams):
    _info(benchmark, streams)
    with Predictor(fp16_model, "torchscript", "cuda", "fp16", tiling=Tiling(TILE_PX, TILE_PX), streams=streams, max_batch=BATCH, trust_code=True) as p:
        benchmark(p.predict, [frame])
