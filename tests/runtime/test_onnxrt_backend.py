"""ONNX Runtime backend: graphs with several named inputs and outputs, FP16 graphs, and the CUDA provider list."""

from pathlib import Path

import numpy as np
import pytest
import torch

from edgead.artifact import Artifact
from edgead.errors import DataError
from edgead.export.onnx import export_onnx
from edgead.export.onnx_fp16 import to_fp16
from edgead.runtime.backends.onnxrt import OnnxRuntimeBackend, cuda_providers

CODES = np.random.default_rng(1).integers(0, 16, (3, 4, 4), dtype=np.int64)
IMAGES = np.random.default_rng(0).integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)


class CodesAndImages(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(16, 3)

    def forward(self, codes, images):
        latent = self.embed(codes)
        return ((latent - images.float() / 255.0) ** 2).mean(-1), codes + 1


@pytest.fixture(scope="module")
def graphs():
    fp32 = export_onnx(CodesAndImages().eval(), example_inputs=(CODES, IMAGES), input_names=("codes", "images"), output_names=("error", "next"))
    return {"fp32": fp32, "fp16": to_fp16(fp32)}


def backend(graph, precision="fp32"):
    entry = {"backend": "onnxruntime", "precision": precision, "member": f"engines/prior.{precision}.onnx"}
    return OnnxRuntimeBackend(Artifact(Path("<memory>"), {"engines": [entry]}, {entry["member"]: graph}), entry, "cpu")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_several_inputs_and_outputs_positional_by_name_and_bound(graphs, precision):
    with backend(graphs[precision], precision) as ort_backend:
        error, following = ort_backend.infer(CODES, IMAGES)
        by_name = ort_backend.infer({"images": IMAGES, "codes": CODES})
        bound = ort_backend.infer_bound((CODES, IMAGES), "cpu")  # the CUDA path's binding calls, on the CPU device
        with pytest.raises(DataError, match="takes 2 inputs"):
            ort_backend.infer(CODES)
        with pytest.raises(DataError, match="takes inputs"):
            ort_backend.infer({"codes": CODES})
    assert error.dtype == np.float32 and error.shape == (3, 4, 4)  # FP16 graphs' float outputs come back as float32
    np.testing.assert_array_equal(following, CODES + 1)
    np.testing.assert_array_equal(by_name[0], error)
    np.testing.assert_array_equal(bound[0], error)


def test_cuda_providers_put_tensorrt_first_where_present(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    both = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    first, cuda, cpu = cuda_providers(both, 1, "fp16")
    assert first[0] == "TensorrtExecutionProvider" and first[1]["device_id"] == 1 and "trt_fp16_enable" not in first[1]
    assert Path(first[1]["trt_engine_cache_path"]).is_dir() and cuda == ("CUDAExecutionProvider", {"device_id": 1}) and cpu == "CPUExecutionProvider"
    assert [p[0] for p in cuda_providers(both, 0, "int8")[:1]] == ["CUDAExecutionProvider"]  # the CPU INT8 graph is not for TensorRT
    assert [p[0] for p in cuda_providers(both[1:], 0, "fp16")[:1]] == ["CUDAExecutionProvider"]
    monkeypatch.setenv("EDGEAD_ORT_TENSORRT", "0")
    assert [p[0] for p in cuda_providers(both, 0, "fp16")[:1]] == ["CUDAExecutionProvider"]
