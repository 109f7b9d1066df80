"""Frames per second through a Triton server (1, 4 and 16 concurrent clients, dynamic batching on and off) beside
`edgead predict` in one process, on the same frames (PatchCore, 64 px, CPU, ONNX Runtime FP32).

Run: .venv/bin/python -m pytest benchmarks/test_bench_triton.py --benchmark-only -s --benchmark-json=bench-triton.json

The server is the tritonserver bundled in nvidia-pytriton on 127.0.0.1; it has only the Python backend, so the
repositories are the --python-only layout (one Python model: edgead's Predictor with ONNX Runtime inside) and
the ensemble layout with its graph model as a Python model running ONNX Runtime. Each client sends one frame
per request over gRPC and waits for its answer. The ratios compare the medians of one run, side by side; the
server's own statistics (requests against executions) show how many requests the batcher merged.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from edgead.artifact import read_artifact
from edgead.config import PatchCoreConfig
from edgead.export.bundle import write_trained
from edgead.kit.patchcore import fit_patchcore
from edgead.runtime.datasets import open_dataset
from edgead.runtime.images import read_image
from edgead.runtime.predictor import Predictor
from edgead.runtime.preprocess import resize_to_input

tritonclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] (the triton extra) is not installed")
from edgead.export.triton import TritonOptions, write_triton_repository  # noqa: E402
from edgead.export.triton_server import LocalTritonServer  # noqa: E402
from edgead.runtime.triton_client import TritonClient  # noqa: E402

SIZE_PX = 64
N_FRAMES = 96
CLIENTS = (1, 4, 16)
LAYOUTS = {"python-only": dict(python_only=True), "ensemble": dict(graphs_in_python=True)}
_fps: dict[str, float] = {}


@pytest.fixture(scope="module")
def model(demo_root, tmp_path_factory):
    fitted = fit_patchcore(open_dataset(demo_root).train, PatchCoreConfig(image_size_px=SIZE_PX))
    path, _ = write_trained(fitted, tmp_path_factory.mktemp("m") / "triton.edgead")
    return read_artifact(path)


@pytest.fixture(scope="module")
def frames(demo_root):
    images = [resize_to_input(read_image(s.path), (SIZE_PX, SIZE_PX)) for s in open_dataset(demo_root).test]
    return [images[i % len(images)] for i in range(N_FRAMES)]


@pytest.fixture(scope="module")
def server(model, tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    for layout, options in LAYOUTS.items():
        for batching in (True, False):
            name = f"{layout.replace('-', '_')}_{'batched' if batching else 'unbatched'}"
            write_triton_repository(model, repo, TritonOptions(name=name, max_batch=16, dynamic_batching=batching, **options))
    try:
        running = LocalTritonServer(repo, startup_s=180).start()
    except Exception as exc:  # noqa: BLE001 - a machine where the bundled server cannot run
        pytest.skip(f"no Triton server here: {exc}")
    yield running
    running.stop()


def _info(benchmark, machine, what, **extra):
    benchmark.extra_info.update(machine, backend="onnxruntime", precision="fp32", size_px=SIZE_PX, frames=N_FRAMES, what=what, **extra)


@pytest.mark.parametrize("blas_threads", [None, 1], ids=["blas-default", "blas-1"])
@pytest.mark.parametrize("batch", [1, 8], ids=["run-batch1", "predict-batch8"])
def test_in_process(benchmark, model, frames, machine, batch, blas_threads):
    """Reference: the Predictor in this process, one frame at a time (as `run`) and in batches of 8 (as `predict`);
    with numpy's BLAS threads as they are, and with one (the server's model processes run with OMP_NUM_THREADS=1)."""
    from threadpoolctl import threadpool_limits

    key = f"in-process-b{batch}" + ("-blas1" if blas_threads else "")
    _info(benchmark, machine, f"in-process Predictor, batch {batch}, BLAS threads {blas_threads or 'default'}", batch=batch)
    with Predictor(model, backend="onnxruntime") as predictor, threadpool_limits(blas_threads):
        benchmark.pedantic(lambda: [predictor.predict(frames[s : s + batch]) for s in range(0, N_FRAMES, batch)], rounds=10, warmup_rounds=1)
    _fps[key] = N_FRAMES / benchmark.stats.stats.median
    print(f"\nin process, batch {batch}, BLAS threads {blas_threads or 'default'}: {_fps[key]:.1f} frames/s")


def _send(url, name, frames):
    with TritonClient(url, name) as client:
        for frame in frames:
            client.infer(frame[None])


def _executions(url, name):
    """(requests, executions) of every model of `name` so far, from the server's statistics."""
    client = tritonclient.InferenceServerClient(url)
    try:
        stats = client.get_inference_statistics(as_json=True)["model_stats"]
    finally:
        client.close()
    return {s["name"]: (int(s.get("inference_count", 0)), int(s.get("execution_count", 0))) for s in stats if s["name"].startswith(name)}


@pytest.mark.parametrize("batching", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("clients", CLIENTS)
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_through_triton(benchmark, server, frames, machine, layout, clients, batching):
    name = f"{layout.replace('-', '_')}_{'batched' if batching else 'unbatched'}"
    shares = [frames[i::clients] for i in range(clients)]
    before = _executions(server.grpc_url, name)

    def once():
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(lambda share: _send(server.grpc_url, name, share), shares))

    benchmark.pedantic(once, rounds=5, warmup_rounds=1)
    after = _executions(server.grpc_url, name)
    merged = {m: (after[m][0] - before.get(m, (0, 0))[0], after[m][1] - before.get(m, (0, 0))[1]) for m in after}
    fps = N_FRAMES / benchmark.stats.stats.median
    ratios = {k: round(fps / v, 3) for k, v in _fps.items()}
    _info(benchmark, machine, f"Triton {layout}, {clients} clients, dynamic batching {'on' if batching else 'off'}",
          clients=clients, dynamic_batching=batching, fps=round(fps, 1), ratio_vs=ratios, requests_executions=merged)
    shown = ", ".join(f"{m}: {r} requests in {e} executions" for m, (r, e) in sorted(merged.items()))
    print(f"\nTriton {layout:11s} {clients:2d} clients, batching {'on ' if batching else 'off'}: {fps:6.1f} frames/s "
          f"({', '.join(f'{v:.2f}x {k}' for k, v in ratios.items())}); {shown}")
    assert np.isfinite(fps)
