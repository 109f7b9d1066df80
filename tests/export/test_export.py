"""Export a tiny trained model to every format this machine can build; bad input gives clear errors."""

import json
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgead.artifact import read_artifact
from edgead.cli import main
from edgead.errors import ArtifactError, ConfigError, DataError
from edgead.export.calibration import load_calibration_images
from edgead.export.engines import choose_formats
from edgead.export.stage import export_model
from edgead.export.tensorrt import tensorrt_available
from edgead.kit.patchcore import load_feature_model
from edgead.runtime.predictor import Predictor

NO_TRT = tensorrt_available() is not None


@pytest.fixture
def model_copy(tiny_trained, tmp_path):
    _, path = tiny_trained
    return shutil.copy(path, tmp_path / "m.edgead")


@pytest.mark.parametrize("format_name, precision", [("onnx", "fp32"), ("onnx", "fp16"), ("torchscript", "fp32"), ("torchscript", "fp16")])
def test_export_matches_eager(model_copy, tiny_data_root, format_name, precision):
    result = export_model(model_copy, precision, format_name, check_dir=str(tiny_data_root))
    (entry,) = result.engines
    parity = entry["parity"]
    if precision == "fp32":
        assert parity["max_rel_output_diff"] < 1e-4 and parity["max_rel_score_diff"] < 1e-4
    else:
        assert parity["max_rel_output_diff"] < 5e-2 and parity["max_rel_score_diff"] < 1e-2
        assert abs(result.aurocs["eager/fp32"] - result.aurocs[f"{format_name}/{precision}"]) <= 0.005
    assert not result.problems
    art = read_artifact(model_copy)  # re-read from disk: hashes, manifest and the new member agree
    assert entry in art.manifest["engines"] and entry["member"] in art.members
    assert art.manifest["parity_auroc"]["eager/fp32"] == result.aurocs["eager/fp32"]
    # its own threshold, cross-calibrated through its own outputs: for an FP32 engine, the model's within the precision
    model_threshold = art.manifest["postprocess"]["image_threshold"]
    assert entry["calibration"]["false_alarm_rate"] == art.manifest["postprocess"]["calibration"]["false_alarm_rate"]
    tolerance = 1e-4 if precision == "fp32" else 2e-2
    assert abs(entry["threshold"] - model_threshold) <= tolerance * model_threshold


def test_onnx_passes_checker_and_matches_eager(model_copy):
    import onnx
    import onnxruntime as ort

    art = read_artifact(model_copy)
    entry = art.engine("onnxruntime", "fp32")
    graph = onnx.load_from_string(art.member(entry["member"]))
    onnx.checker.check_model(graph, full_check=True)
    assert graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    images = art.load_npy("parity_images.npy")
    session = ort.InferenceSession(art.member(entry["member"]), providers=["CPUExecutionProvider"])
    for batch in (1, 3):  # dynamic batch
        got = session.run(None, {"images": images[:batch]})[0]
        with torch.inference_mode():
            want = load_feature_model(art)(torch.from_numpy(images[:batch])).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_torchscript_loads_without_edgead(model_copy, tmp_path):
    art = read_artifact(model_copy)
    ts_path = tmp_path / "features.ts"
    ts_path.write_bytes(art.member(art.engine("torchscript", "fp32")["member"]))
    np.save(tmp_path / "x.npy", art.load_npy("parity_images.npy")[:2])
    code = (
        "import sys; sys.modules['edgead'] = None\n"
        "import numpy as np, torch\n"
        f"m = torch.jit.load({str(ts_path)!r})\n"
        f"y = m(torch.from_numpy(np.load({str(tmp_path / 'x.npy')!r})))\n"
        "print(tuple(y.shape), y.dtype)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    channels = art.manifest["features"]["channels"]
    grid = art.manifest["features"]["grid"]
    assert done.stdout.strip() == f"(2, {channels}, {grid[0]}, {grid[1]}) torch.float32"


def test_runtime_picks_fp16_only_where_asked_or_on_cuda(model_copy):
    export_model(model_copy, "fp16", "torchscript")
    art = read_artifact(model_copy)
    with Predictor(art, backend="torchscript", trust_code=True) as cpu_default:
        assert cpu_default.backend.engine["precision"] == "fp32"
    with Predictor(art, backend="torchscript", precision="fp16", trust_code=True) as asked:
        assert asked.backend.engine["precision"] == "fp16"


@pytest.mark.skipif(not NO_TRT, reason="TensorRT is present here: the fallback path is not taken")
def test_bare_export_without_tensorrt_says_so(model_copy, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["export", "--model", str(model_copy), "--engine", "fp16"])
    assert result.exit_code == 0, result.output
    assert "TensorRT engines were not built" in result.output and "jetson/build_engines.sh" in result.output
    formats = {(e["format"], e["precision"]) for e in read_artifact(model_copy).manifest["engines"]}
    assert {("onnx", "fp32"), ("torchscript", "fp16")} <= formats


@pytest.mark.skipif(not NO_TRT, reason="TensorRT is present here")
def test_int8_without_tensorrt_is_onnx_runtime_quantization():
    formats, notes = choose_formats(None, "int8")
    assert [f.name for f in formats] == ["onnx"]
    assert any("TensorRT INT8 engines are built on the device" in n for n in notes)


def test_onnx_int8_is_calibrated_checked_and_picked_on_request(model_copy, tiny_data_root):
    result = export_model(model_copy, "int8", "onnx", calib_dir=str(tiny_data_root / "train" / "good"), check_dir=str(tiny_data_root))
    (entry,) = result.engines
    assert entry["precision"] == "int8" and entry["calibration_images"] == 8
    assert 0 < entry["parity"]["max_rel_output_diff"] < 0.5  # quantized: close, not equal
    assert abs(result.aurocs["onnx/int8"] - result.aurocs["eager/fp32"]) <= 0.2
    art = read_artifact(model_copy)
    assert len(art.member(entry["member"])) < len(art.member(art.engine("onnxruntime", "fp32")["member"]))
    with Predictor(art, backend="onnxruntime") as default, Predictor(art, backend="onnxruntime", precision="int8") as asked:
        assert default.backend.engine["precision"] == "fp32" and asked.backend.engine["precision"] == "int8"
        # each runs with its own threshold: INT8's calibrated through INT8 outputs on the training images
        assert asked.threshold == entry["threshold"] == entry["calibration"]["threshold"]
        assert asked.threshold != art.manifest["postprocess"]["image_threshold"]
        assert entry["calibration"]["scored_by"] == "onnx/int8" and "training images" in entry["calibration"]["images_from"]


def test_a_head_that_cannot_refit_gets_the_model_threshold_shifted_by_its_engine(model_copy, monkeypatch):
    from edgead.runtime.heads.knn import KnnHead

    monkeypatch.setattr(KnnHead, "refits_per_fold", False)
    (entry,) = export_model(model_copy, "fp32", "onnx").engines
    assert "shifted by" in entry["calibration"]["method"]
    model_threshold = read_artifact(model_copy).manifest["postprocess"]["image_threshold"]
    assert abs(entry["threshold"] - model_threshold) < 1e-3 * model_threshold  # FP32 ONNX: no shift to speak of


def test_int8_without_calibration_images_is_a_clear_error(model_copy, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        export_model(model_copy, "int8", "onnx", calib_dir=str(tmp_path / "missing"))


@pytest.mark.parametrize(
    "format_name, precision, message",
    [("torchscript", "int8", "fp32/fp16 only"), ("caffe", "fp32", "unknown format"),
     ("onnx", "fp8", "unknown precision")],
)
def test_bad_format_or_precision(format_name, precision, message):
    with pytest.raises(ConfigError, match=message):
        choose_formats(format_name, precision)


def test_cli_rejects_unknown_precision(model_copy):
    result = CliRunner().invoke(main, ["export", "--model", str(model_copy), "--engine", "fp8"])
    assert result.exit_code != 0 and "fp8" in result.output


def test_artifact_without_weights(model_copy):
    with zipfile.ZipFile(model_copy) as src:
        entries = {n: src.read(n) for n in src.namelist() if n != "weights.safetensors"}
    manifest = json.loads(entries["manifest.json"])
    del manifest["members"]["weights.safetensors"]
    entries["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(model_copy, "w") as dst:
        for name, data in entries.items():
            dst.writestr(name, data)
    with pytest.raises(ArtifactError, match="weights.safetensors"):
        export_model(model_copy, "fp32", "onnx")


def test_calibration_folder_without_readable_image(tmp_path):
    (tmp_path / "a.png").write_bytes(b"not a png")
    (tmp_path / "b.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="no readable image.*2 files could not be read"):
        load_calibration_images(tmp_path, (64, 64))
    with pytest.raises(DataError, match="does not exist"):
        load_calibration_images(tmp_path / "missing", (64, 64))


def test_calibration_images_loaded_at_input_size(tiny_data_root):
    images = load_calibration_images(tiny_data_root / "train" / "good", (64, 96), limit=3)
    assert images.shape == (3, 64, 96, 3) and images.dtype == np.uint8


def test_full_disk_leaves_input_intact(model_copy, monkeypatch):
    before = model_copy.read_bytes()
    import edgead.artifact as artifact_module

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(artifact_module.os, "fsync", full_disk)
    result = CliRunner().invoke(main, ["export", "--model", str(model_copy), "--engine", "fp32", "--format", "onnx"])
    assert result.exit_code == 2 and "nothing was changed" in result.stderr
    assert model_copy.read_bytes() == before
    assert sorted(p.name for p in model_copy.parent.iterdir()) == ["m.edgead"]


@pytest.mark.skipif(not NO_TRT, reason="TensorRT is present here: it would build")
def test_export_without_torch_uses_the_stored_onnx_graph(model_copy):
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from edgead.artifact import read_artifact\n"
        "from edgead.export.stage import model_sources\n"
        f"(source,) = model_sources(read_artifact({str(model_copy)!r})).values()\n"
        "assert source.model is None and source.onnx[:4] and source.onnx_graph() is source.onnx\n"
        "from edgead.cli import main\n"
        f"main(['export', '--model', {str(model_copy)!r}, '--engine', 'fp16'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "no format can be built here" in done.stderr and "torch is not installed" in done.stderr


def test_int8_defaults_to_the_training_images_and_says_when_they_are_gone(model_copy, tmp_path):
    import copy

    from edgead.artifact import write_artifact

    art = read_artifact(model_copy)
    manifest = copy.deepcopy(art.manifest)
    manifest["training"]["images_dir"] = str(tmp_path / "gone")
    write_artifact(model_copy, manifest, dict(art.members))
    with pytest.raises(ConfigError, match="pass --calib DIR.*not on this machine"):
        export_model(model_copy, "int8", "onnx")
