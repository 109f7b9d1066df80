"""The repository served: tritonserver from nvidia-pytriton on 127.0.0.1, frames sent with tritonclient.

That server has only the Python backend, so it serves the --python-only layout and, with the graph models as
Python models running ONNX Runtime, the ensemble (PatchCore) and BLS (vq-restore) layouts. Each must give the
scores and maps of `edgead predict`. Skipped with the reason where nvidia-pytriton or tritonclient is missing or
its server cannot start on this machine; the server is stopped at the end, whatever happens.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgead.artifact import read_artifact
from edgead.cli import main
from edgead.errors import BackendError, DataError, DependencyError, EdgeADError
from edgead.export.triton import TritonOptions, write_triton_repository
from edgead.export.triton_server import LocalTritonServer, free_port
from edgead.runtime.images import list_images, read_image
from edgead.runtime.postprocess import resize_map

pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] (the triton extra) is not installed")
from edgead.runtime.triton_client import TritonClient, TritonPredictor  # noqa: E402

MODELS = {  # served name -> (fixture, layout)
    "pc": ("tiny_trained", dict(python_only=True)),
    "pc_ensemble": ("tiny_trained", dict(graphs_in_python=True)),
    "vq": ("tiny_vq_model", dict(python_only=True)),
    "vq_bls": ("tiny_vq_model", dict(graphs_in_python=True)),
    "sae": ("tiny_small_ae_model", dict(python_only=True)),
    "sae_bls": ("tiny_small_ae_model", dict(graphs_in_python=True)),
    "pc_tiled": ("tiny_tiled_model", dict(python_only=True)),
    "pc_tiled_bls": ("tiny_tiled_model", dict(graphs_in_python=True)),
}


@pytest.fixture(scope="module")
def tiny_tiled_model(tiny_trained, tmp_path_factory):
    """The tiny PatchCore set to cut its 128 px frames into 96 px tiles at a 32 px stride: frames of any size go to the server."""
    from edgead.artifact import write_artifact

    artifact = read_artifact(tiny_trained[1])
    manifest = json.loads(json.dumps(artifact.manifest))
    manifest["tiling"] = {"enabled": True, "tile_px": 96, "stride_px": 32}
    return write_artifact(tmp_path_factory.mktemp("tiled") / "tiled.edgead", manifest, dict(artifact.members))


def model_path(request, fixture):
    value = request.getfixturevalue(fixture)
    return value[1] if isinstance(value, tuple) else value


PROBE_MODEL = """
import numpy as np
import triton_python_backend_utils as pb


class TritonPythonModel:
    def execute(self, requests):
        return [pb.InferenceResponse([pb.Tensor.from_dlpack("Y", np.from_dlpack(pb.get_input_tensor_by_name(r, "X")) * 2)]) for r in requests]
"""


def probe_repository(folder):
    """A repository with one Python model that needs nothing of edgead's: whether this machine can host the Python backend."""
    (folder / "probe" / "1").mkdir(parents=True)
    (folder / "probe" / "1" / "model.py").write_text(PROBE_MODEL)
    (folder / "probe" / "config.pbtxt").write_text('name: "probe"\nbackend: "python"\nmax_batch_size: 1\n'
                                                   'input [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
                                                   'output [ { name: "Y" data_type: TYPE_FP32 dims: [ 1 ] } ]\n')
    return folder


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    probe = probe_repository(tmp_path_factory.mktemp("probe-repo"))
    try:  # can this machine run the bundled server and its Python backend at all? (nothing of edgead's can fail this)
        with LocalTritonServer(probe, startup_s=60):
            pass
    except DependencyError as exc:
        pytest.skip(f"no Triton server here: {exc}")
    except EdgeADError as exc:
        pytest.skip(f"the tritonserver of nvidia-pytriton cannot serve a Python model on this machine: {exc}")
    repo = tmp_path_factory.mktemp("repo")
    for name, (fixture, layout) in MODELS.items():
        write_triton_repository(read_artifact(model_path(request, fixture)), repo, TritonOptions(name=name, max_batch=4, **layout))
    with LocalTritonServer(repo, startup_s=120) as running:  # failing to load our models is a failure, not a skip
        yield running


def images_of(root):
    return sorted(list_images(Path(root) / "test"))


@pytest.fixture(scope="module")
def predicted(request, tiny_data_root, tmp_path_factory):
    """`edgead predict` on the test images, per model fixture: {path: (score, anomalous, map at the image size)}."""
    out = {}
    for fixture in ("tiny_trained", "tiny_vq_model", "tiny_small_ae_model", "tiny_tiled_model"):
        folder = tmp_path_factory.mktemp("predict")
        result = CliRunner().invoke(main, ["predict", "--model", str(model_path(request, fixture)), str(tiny_data_root / "test"),
                                           "--out", str(folder), "--backend", "onnxruntime"])
        assert result.exit_code in (0, 2), result.output
        lines = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
        import cv2

        out[fixture] = {Path(r["path"]).resolve(): (r["score"], r["anomalous"], cv2.imread(str(folder / r["map"]), cv2.IMREAD_UNCHANGED)) for r in lines}
    return out


@pytest.mark.parametrize("name", list(MODELS))
def test_served_scores_and_maps_are_those_of_edgead_predict(name, server, predicted, tiny_data_root):
    fixture = MODELS[name][0]
    paths = images_of(tiny_data_root)
    images = [read_image(p) for p in paths]
    with TritonPredictor(server.grpc_url, name) as remote:
        served = remote.predict(images)
    expected = predicted[fixture]
    assert len(served) == len(paths) == len(expected)
    scale = max(abs(s) for s, _, _ in expected.values())
    assert scale > 0 and len({s for s, _, _ in expected.values()}) >= 3  # the images score apart: a real comparison
    for path, image, got in zip(paths, images, served):
        score, anomalous, full_map = expected[path.resolve()]
        # the same ONNX Runtime graphs as predict's: FP32-tight, relative to the model's score scale (vq-restore's is ~1e-7 here)
        assert got.score == pytest.approx(score, rel=1e-5, abs=1e-6 * scale), path
        assert got.anomalous == anomalous
        np.testing.assert_allclose(resize_map(got.anomaly_map, image.shape[:2]), full_map, rtol=1e-5, atol=1e-6 * scale)


def test_concurrent_clients_get_their_own_results(server, tiny_data_root):
    """Requests merged by the dynamic batcher come back to the client that sent them."""
    from concurrent.futures import ThreadPoolExecutor

    images = [read_image(p) for p in images_of(tiny_data_root)]
    with TritonPredictor(server.grpc_url, "pc") as remote:
        alone = [remote.predict([image])[0].score for image in images]
    def score(i):
        with TritonPredictor(server.grpc_url, "pc") as remote:
            return [remote.predict([images[(i + j) % len(images)]])[0].score for j in range(len(images))]
    with ThreadPoolExecutor(6) as pool:
        for i, scores in enumerate(pool.map(score, range(6))):
            assert scores == pytest.approx([alone[(i + j) % len(images)] for j in range(len(images))], rel=1e-5)


def assert_one_line(exc_info, *words):
    text = str(exc_info.value)
    assert "\n" not in text, text
    for word in words:
        assert word in text, text


def test_bad_requests_are_one_line_errors_and_the_server_stays_up(server, tiny_data_root):
    image = read_image(images_of(tiny_data_root)[0])
    with TritonClient(server.grpc_url, "pc") as client:
        height, width, _ = client.info["frame_dims"]
        with pytest.raises(BackendError) as wrong_size:
            client.infer(np.zeros((1, height + 8, width, 3), np.uint8))
        assert_one_line(wrong_size, "refused", "FRAMES")
        with pytest.raises(BackendError) as wrong_dtype:
            client.infer(np.zeros((1, height, width, 3), np.float32))
        assert_one_line(wrong_dtype, "refused", "FP32")
        with pytest.raises(BackendError) as too_many:
            client.infer(np.zeros((client.max_batch + 1, height, width, 3), np.uint8))
        assert_one_line(too_many, "refused")
    with TritonPredictor(server.grpc_url, "pc") as remote:
        with pytest.raises(DataError, match="uint8 RGB"):
            remote.predict([image.astype(np.float32)])
        assert np.isfinite(remote.predict([image])[0].score)  # still serving
    with pytest.raises(BackendError) as unknown:
        TritonClient(server.grpc_url, "no-such-model")
    assert_one_line(unknown, "no model 'no-such-model'", "pc_ensemble", "--model-name")


def test_a_server_that_is_down_is_a_one_line_error():
    with pytest.raises(BackendError) as down:
        TritonClient(f"127.0.0.1:{free_port()}", "pc", timeout_s=5)
    assert_one_line(down, "no Triton server answers at 127.0.0.1:", "start it")


def test_run_triton_scores_a_folder_with_events_and_drift(server, tiny_data_root, predicted, tmp_path):
    events = tmp_path / "events.jsonl"
    args = ["run", "--images", str(tiny_data_root / "test"), "--headless", "--triton", server.grpc_url, "--model-name", "pc",
            "--events", str(events), "--json", "--drift-window", "3"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    expected = predicted["tiny_trained"]
    assert summary["frames"] == len(expected)
    assert summary["anomalous"] == sum(anomalous for _, anomalous, _ in expected.values())
    logged = [json.loads(line) for line in events.read_text().splitlines()]
    scores = sorted(e["score"] for e in logged if e.get("event") == "anomaly")
    assert scores == pytest.approx(sorted(s for s, anomalous, _ in expected.values() if anomalous), rel=1e-5)


@pytest.mark.parametrize("extra, message", [
    (["--backend", "onnxruntime"], "--backend do not apply with --triton"),
    (["--tile", "64"], "--tile do not apply with --triton"),
    (["--model-name", "pc", "--threshold", "1", "--false-alarm-rate", "0.1"], "not both"),
    (["--triton", "http://127.0.0.1:8001"], "give HOST:PORT of the server's gRPC port, without a scheme"),
    (["--triton", "127.0.0.1"], "give HOST:PORT"),
    (["--triton", "127.0.0.1:70000"], "give HOST:PORT"),
    (["--model-name", "pc"], "give both --triton HOST:PORT and --model-name NAME"),
])
def test_run_triton_refuses_what_the_server_decides(extra, message, tiny_data_root):
    args = ["run", "--images", str(tiny_data_root / "test"), "--headless"]
    if "--triton" not in extra and extra != ["--model-name", "pc"]:
        args += ["--triton", "127.0.0.1:1"]
    if "--model-name" not in extra:
        args += ["--model-name", "pc"]
    result = CliRunner().invoke(main, args + extra)
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
