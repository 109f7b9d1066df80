"""Stride-based patch inference of the small patch auto-encoder: batches of patches through the scheduler vs one patch at a time.

A 256 px demo frame is cut into 63 px patches every 8 px (676 patches) and run through the exported patch
graph on ONNX Runtime (CPU): in engine batches of 256 through the PatchScheduler, and one patch per engine
call through the same path. Both give the same error maps. Run:
    python -m pytest benchmarks/test_bench_small_ae.py --benchmark-only --benchmark-json=small_ae.json
On a CUDA GPU the same frame goes through FP32/FP16 TorchScript with 1, 2 and 4 streams against a synchronous loop.
"""

import numpy as np
import pytest
import torch

from edgead.artifact import read_artifact
from edgead.config import SmallAEConfig
from edgead.export.bundle import write_trained
from edgead.kit.small_ae_detector import DETECTOR
from edgead.runtime.datasets import open_dataset
from edgead.runtime.images import read_image
from edgead.runtime.predictor import Predictor

STRIDE_PX = 8
BATCHED = 256


@pytest.fixture(scope="module")
def small_ae(demo_root, tmp_path_factory):
    config = SmallAEConfig(patch_stride_px=STRIDE_PX, epochs=1, patches_per_epoch=256)  # the weights do not change the speed
    trained = DETECTOR.fit(open_dataset(demo_root).train, config)
    path, _ = write_trained(trained, tmp_path_factory.mktemp("small_ae") / "small.edgead", formats=("onnx", "torchscript"))
    return read_artifact(path)


@pytest.fixture(scope="module")
def frame(demo_root):
    return read_image(open_dataset(demo_root).test[0].path)


def _run(predictor, frame):
    batch = predictor.prepare([frame])
    return predictor.infer(batch)["error"], len(batch.images)


@pytest.fixture(scope="module")
def one_at_a_time_errors(small_ae, frame):
    with Predictor(small_ae, "onnxruntime", max_batch=1) as p:
        return _run(p, frame)[0]


@pytest.mark.parametrize("max_batch", [BATCHED, 1], ids=["batched", "one-patch"])
def test_patches_per_second(benchmark, small_ae, frame, machine, max_batch, one_at_a_time_errors):
    with Predictor(small_ae, "onnxruntime", max_batch=max_batch) as p:
        errors, patches = benchmark(_run, p, frame)
    np.testing.assert_allclose(errors, one_at_a_time_errors, rtol=1e-5, atol=1e-6)  # same outputs either way
    benchmark.extra_info.update(
        machine, backend="onnxruntime", precision="fp32", frame_px=frame.shape[0], patch_px=63, stride_px=STRIDE_PX,
        patches=patches, engine_batch=max_batch, patches_per_s=patches / benchmark.stats.stats.median,
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("streams", [0, 1, 2, 4], ids=["sync", "1-stream", "2-streams", "4-streams"])
def test_cuda_streams(benchmark, small_ae, frame, tmp_path, precision, streams):
    """Patches through TorchScript on CUDA: the ring of streams against a synchronous loop (streams=0)."""
    from edgead.export.stage import export_model

    path = small_ae.path
    if precision == "fp16":
        path = export_model(small_ae.path, "fp16", "torchscript", tmp_path / "fp16.edgead").path
    artifact = read_artifact(path)
    with Predictor(artifact, "torchscript", "cuda", precision, max_batch=BATCHED, streams=max(streams, 1), trust_code=True) as p:
        if streams == 0:
            def run():
                batch = p.prepare([frame])
                return [p.backend.infer(np.asarray(batch.images[i : i + BATCHED])) for i in range(0, len(batch.images), BATCHED)]
        else:
            def run():
                return _run(p, frame)
        benchmark(run)
    benchmark.extra_info.update(device=torch.cuda.get_device_name(0), backend="torchscript", precision=precision, streams=streams)
