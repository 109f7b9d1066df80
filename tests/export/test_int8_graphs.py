"""INT8 for every graph that takes images: the graph's own input name, and patch graphs calibrated on patches."""

import shutil

import numpy as np
import pytest
import torch

from edgead.artifact import read_artifact
from edgead.errors import ConfigError
from edgead.export.onnx import export_onnx
from edgead.export.onnx_int8 import _fit_to_input, quantize_onnx
from edgead.export.stage import export_model
from edgead.runtime.predictor import Predictor


def test_patch_graphs_are_calibrated_on_crops_of_the_images_on_a_grid():
    images = np.arange(2 * 20 * 30 * 3, dtype=np.uint8).reshape(2, 20, 30, 3)
    crops = _fit_to_input(images, (8, 8))
    # origins every 4 px and flush with the far edge: y in 0, 4, 8, 12; x in 0, 4, ..., 20, 22
    assert crops.shape == (2 * 4 * 7, 8, 8, 3)
    assert np.array_equal(crops[0], images[0, :8, :8]) and np.array_equal(crops[-1], images[1, 12:, 22:])
    assert _fit_to_input(images, None) is images and _fit_to_input(images, (20, 30)) is images
    assert len(_fit_to_input(images, (8, 8), limit=10)) == 10
    with pytest.raises(ConfigError, match="larger than the 20x30 px calibration images"):
        _fit_to_input(images, (24, 24))


class TwoInputs(torch.nn.Module):
    def forward(self, codes, images):
        return images.float().mean() + codes.float().mean()


def test_a_graph_with_several_inputs_is_refused_with_what_to_do():
    graph = export_onnx(TwoInputs(), example_inputs=(torch.zeros(1, 4, dtype=torch.int64), torch.zeros(1, 8, 8, 3, dtype=torch.uint8)),
                        input_names=("codes", "images"), output_names=("out",))
    with pytest.raises(ConfigError, match=r"one input; this graph has \['codes', 'images'\].*fp16 or fp32"):
        quantize_onnx(graph, np.zeros((2, 8, 8, 3), np.uint8))


def test_small_ae_exports_int8_for_its_dense_frames_and_its_patches(tiny_small_ae_model, tiny_data_root, tmp_path):
    model = shutil.copy(tiny_small_ae_model, tmp_path / "small.edgead")
    result = export_model(model, "int8", "onnx", calib_dir=str(tiny_data_root / "train" / "good"))
    assert sorted(e["graph"] for e in result.engines) == ["dense", "patch"]
    for entry in result.engines:
        assert entry["precision"] == "int8" and 0 < entry["parity"]["max_rel_output_diff"] < 0.2
    art = read_artifact(model)
    for mode in ("dense", "patches"):
        with Predictor(art, backend="onnxruntime", precision="int8", inference=mode) as p:
            assert p.backend.engine["precision"] == "int8"
            (prediction,) = p.predict([np.full((96, 96, 3), 128, np.uint8)])
            assert np.isfinite(prediction.score)
