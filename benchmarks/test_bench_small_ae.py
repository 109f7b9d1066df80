"""The small patch auto-encoder per frame: dense inference against stride-based patches (and PatchCore), and patch batching.

Per frame (`test_frame_latency`): the whole deployed path (prepare, engine, head, maps) for one 256 px demo
frame on ONNX Runtime FP32 (CPU), small-ae dense and patches with each scorer, and PatchCore, in one run;
the targets are checked after the last of them, for each scorer: dense at least 20x faster than patches, and faster than PatchCore.
Stride-based patches (`test_patches_per_second`): the frame cut into 63 px patches every 8 px (676 patches)
through the exported patch graph in engine batches of 256 through the PatchScheduler, and one patch per
engine call through the same path. Both give the same error maps. Run:
    python -m pytest benchmarks/test_bench_small_ae.py --benchmark-only -s --benchmark-json=small_ae.json
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
DENSE_SPEEDUP = 20  # the target: dense at least this many times faster per frame than stride-based patches
_median_s: dict[str, float] = {}  # frame_latency id -> median seconds per frame, for the ratios


@pytest.fixture(scope="module")
def small_ae(demo_root, tmp_path_factory):
    config = SmallAEConfig(patch_stride_px=STRIDE_PX, epochs=1, patches_per_epoch=256, scorer="reconstruction,support")  # the weights do not change the speed
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
def patchcore(demo_root, tmp_path_factory):
    from edgead.config import PatchCoreConfig
    from edgead.kit.patchcore import fit_patchcore

    fitted = fit_patchcore(open_dataset(demo_root).train, PatchCoreConfig())
    path, _ = write_trained(fitted, tmp_path_factory.mktemp("patchcore") / "patchcore.edgead", formats=("onnx",))
    return read_artifact(path)


FRAME_CASES = ["dense-reconstruction", "patches-reconstruction", "dense-support", "patches-support", "patchcore"]


@pytest.mark.parametrize("case", FRAME_CASES)
def test_frame_latency(benchmark, request, small_ae, frame, machine, case):
    """One frame through the whole deployed path, as `edgead bench --batch 1` times it."""
    if case == "patchcore":
        predictor = Predictor(request.getfixturevalue("patchcore"), "onnxruntime")
    else:
        inference, scorer = case.split("-")
        predictor = Predictor(small_ae, "onnxruntime", inference=inference, scorer=scorer)
    with predictor:
        rounds = 20 if case.startswith(("dense", "patchcore")) else 3
        (prediction,) = benchmark.pedantic(predictor.predict, ([frame],), rounds=rounds, warmup_rounds=1)
        benchmark.extra_info.update(machine, backend=predictor.describe(), precision="fp32", batch=1, frame_px=frame.shape[0], case=case)
    assert prediction.anomaly_map.shape == (256, 256)
    _median_s[case] = benchmark.stats.stats.median
    if case != FRAME_CASES[-1] or len(_median_s) < len(FRAME_CASES):
        return
    for scorer in ("reconstruction", "support"):
        speedup = _median_s[f"patches-{scorer}"] / _median_s[f"dense-{scorer}"]
        print(f"\n{scorer}: dense {_median_s[f'dense-{scorer}'] * 1e3:.1f} ms, patches {_median_s[f'patches-{scorer}'] * 1e3:.1f} ms "
              f"({speedup:.1f}x), PatchCore {_median_s['patchcore'] * 1e3:.1f} ms per frame")
        benchmark.extra_info[f"{scorer}_dense_speedup"] = round(speedup, 2)
    for scorer in ("reconstruction", "support"):
        assert _median_s[f"patches-{scorer}"] >= DENSE_SPEEDUP * _median_s[f"dense-{scorer}"], scorer
        assert _median_s[f"dense-{scorer}"] < _median_s["patchcore"], scorer


@pytest.fixture(scope="module")
def one_at_a_time_errors(small_ae, frame):
    with Predictor(small_ae, "onnxruntime", max_batch=1, inference="patches") as p:
        return _run(p, frame)[0]


@pytest.mark.parametrize("max_batch", [BATCHED, 1], ids=["batched", "one-patch"])
def test_patches_per_second(benchmark, small_ae, frame, machine, max_batch, one_at_a_time_errors):
    with Predictor(small_ae, "onnxruntime", max_batch=max_batch, inference="patches") as p:
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
    with Predictor(artifact, "torchscript", "cuda", precision, max_batch=BATCHED, streams=max(streams, 1), trust_code=True, inference="patches") as p:
        if streams == 0:
            def run():
                batch = p.prepare([frame])
                return [p.backend.infer(np.asarray(batch.images[i : i + BATCHED])) for i in range(0, len(batch.images), BATCHED)]
        else:
            def run():
                return _run(p, frame)
        benchmark(run)
    benchmark.extra_info.update(device=torch.cuda.get_device_name(0), backend="torchscript", precision=precision, streams=streams)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("streams", [1, 2, 4], ids=["1-stream", "2-streams", "4-streams"])
def test_cuda_dense_tiles(benchmark, small_ae, frame, streams):
    """A 1024 px frame (the demo frame 4 x 4) as 16 dense 256 px tiles through FP32 TorchScript on CUDA, 1, 2 and 4 streams."""
    from edgead.runtime.predictor import Tiling

    big = np.tile(frame, (4, 4, 1))
    with Predictor(small_ae, "torchscript", "cuda", "fp32", max_batch=4, streams=streams, tiling=Tiling(256, 256)) as p:
        (prediction,) = benchmark(p.predict, [big])
    assert prediction.anomaly_map.shape == big.shape[:2]
    benchmark.extra_info.update(device=torch.cuda.get_device_name(0), backend="torchscript", precision="fp32", streams=streams,
                                frame_px=big.shape[0], tile_px=256, tiles=16, engine_batch=4)
