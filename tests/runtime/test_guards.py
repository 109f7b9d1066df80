"""Nothing quietly wrong: options that cannot work fail in one line, doubtful inputs are scored with a warning."""

import logging
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edgead.artifact import read_artifact, write_artifact
from edgead.cli import main
from edgead.errors import ConfigError
from edgead.runtime.backends.base import Backend, slow_engine_warning, tensorrt_missing
from edgead.runtime.datasets import open_dataset
from edgead.runtime.devices import parse_device
from edgead.runtime.framecheck import FrameCheck, ImageGeometry
from edgead.runtime.predictor import Predictor


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize("text, device", [("cpu", "cpu"), ("cuda", "cuda"), ("CUDA:1", "cuda:1"), (" cpu ", "cpu")])
def test_devices_in_canonical_form(text, device):
    assert parse_device(text) == device


@pytest.mark.parametrize("text", ["gpu", "foo", "cuda:", "cuda:x", "cpu:0", ""])
def test_unknown_devices_are_refused(text):
    with pytest.raises(ConfigError, match="use cpu, cuda or cuda:N"):
        parse_device(text)


def test_cli_refuses_device_gpu(tiny_trained):
    result = _cli("bench", "--model", tiny_trained[1], "--device", "gpu", "--iterations", 1)
    assert result.exit_code == 2
    assert "a GPU is called cuda here" in result.output
    assert "Traceback" not in result.output


def _cuda_here() -> bool:
    import onnxruntime
    import torch

    return torch.cuda.is_available() or "CUDAExecutionProvider" in onnxruntime.get_available_providers()


@pytest.mark.skipif(_cuda_here(), reason="this machine has a CUDA backend")
def test_device_cuda_without_cuda_says_what_to_install(tiny_trained):
    result = _cli("bench", "--model", tiny_trained[1], "--device", "cuda", "--iterations", 1)
    assert result.exit_code == 2
    assert "onnxruntime-gpu" in result.output and "edgead doctor" in result.output


@pytest.mark.skipif(not tensorrt_missing(), reason="TensorRT is installed here")
def test_bench_tensorrt_without_tensorrt_says_it_is_missing(tiny_trained):
    result = _cli("bench", "--model", tiny_trained[1], "--backend", "tensorrt", "--iterations", 1)
    assert result.exit_code == 2
    assert "TensorRT is not installed here" in result.output and "JetPack" in result.output
    assert "build one with `edgead export`" not in result.output


@pytest.mark.parametrize("args", [("bench", "--batch", 0), ("bench", "--iterations", 0), ("bench", "--warmup", -1)])
def test_bench_counts_below_one_are_refused(tiny_trained, args):
    result = _cli(*args, "--model", tiny_trained[1])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "is not in the range" in result.output


def test_predict_batch_size_zero_is_refused(tiny_trained, tiny_data_root, tmp_path):
    result = _cli("predict", tiny_data_root / "test" / "good", "--out", tmp_path, "--model", tiny_trained[1], "--batch-size", 0)
    assert result.exit_code == 2 and "is not in the range" in result.output


def test_fp16_on_the_cpu_warns(tiny_trained):
    artifact = read_artifact(tiny_trained[1])
    assert "30x slower" in slow_engine_warning(Backend(artifact, {"precision": "fp16"}, "cpu"))
    assert slow_engine_warning(Backend(artifact, {"precision": "fp16"}, "cuda")) is None
    assert slow_engine_warning(Backend(artifact, {"precision": "fp32"}, "cpu")) is None


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_model_files_respect_the_umask(tiny_trained, tmp_path, umask, mode):
    artifact = read_artifact(tiny_trained[1])
    old = os.umask(umask)
    try:
        path = write_artifact(tmp_path / "m.edgead", artifact.manifest, artifact.members)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode


def test_replacing_a_model_keeps_its_mode(tiny_trained, tmp_path):
    artifact = read_artifact(tiny_trained[1])
    path = write_artifact(tmp_path / "m.edgead", artifact.manifest, artifact.members)
    path.chmod(0o640)
    write_artifact(path, artifact.manifest, artifact.members)
    assert path.stat().st_mode & 0o777 == 0o640


def test_predict_scores_the_rest_when_an_image_is_unreadable(tiny_trained, tiny_data_root, tmp_path):
    folder = tmp_path / "in"
    shutil.copytree(tiny_data_root / "test" / "good", folder)
    (folder / "broken.png").write_bytes(b"not a png")
    result = _cli("predict", folder, "--out", tmp_path / "out", "--model", tiny_trained[1], "-q")
    assert result.exit_code == 2
    assert "1 of 5 images could not be read" in result.output and "broken.png" in result.output
    lines = [__import__("json").loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 5
    (failed,) = [line for line in lines if "error" in line]
    assert failed["path"].endswith("broken.png") and "could not be decoded" in failed["error"]
    assert sum("score" in line for line in lines) == 4


def test_training_on_a_test_folder_warns(tiny_data_root):
    (warning,) = open_dataset(tiny_data_root / "test").warnings
    assert "looks like test data" in warning and "good/ beside" in warning
    assert open_dataset(tiny_data_root).warnings == ()
    assert open_dataset(tiny_data_root / "train" / "good").warnings == ()


def test_image_geometry_flags_far_frames():
    geometry = ImageGeometry.of([(256, 256, 3), (240, 256, 3)])
    assert geometry.problem((256, 256)) is None
    assert geometry.problem((300, 310)) is None
    assert "aspect" in geometry.problem((256, 800))
    assert "smaller" in geometry.problem((1, 1))
    assert "larger" in geometry.problem((1200, 1200))
    assert ImageGeometry.from_manifest(geometry.to_manifest()) == geometry


def test_odd_frames_warn_once_per_run(tiny_trained, caplog):
    artifact = read_artifact(tiny_trained[1])
    assert artifact.manifest["training"]["image_geometry"]["height_px"] == [128, 128]
    with Predictor(artifact) as predictor, caplog.at_level(logging.WARNING):
        predictor.predict([np.zeros((1, 1, 3), np.uint8)])
        predictor.predict([np.zeros((1, 1, 3), np.uint8), np.zeros((128, 400, 3), np.uint8)])
        normal = predictor.predict([np.zeros((128, 128, 3), np.uint8)])
    warnings = [r.getMessage() for r in caplog.records if "training images" in r.getMessage()]
    assert len(warnings) == 1 and "1x1 px" in warnings[0]
    assert normal  # frames like the training images are scored without a word


def test_tiled_models_do_not_check_frame_size():
    check = FrameCheck(ImageGeometry.of([(256, 256)]), tiled=True)
    check.check([np.zeros((1000, 3000, 3), np.uint8)])
    assert not check.warned
