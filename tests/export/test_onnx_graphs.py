"""ONNX export (dynamo first, TorchScript-based where it fails), several named inputs and outputs, FP16 graphs."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgead.errors import ConfigError, EdgeADError
from edgead.export.onnx import export_onnx, export_onnx_graph, graph_io
from edgead.export.onnx_fp16 import precision_summary, preparation_nodes, to_fp16


class Features(torch.nn.Module):
    """Shaped like the feature graph: uint8 NHWC in, cast, normalise, convolutions, float NCHW out."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU6(), torch.nn.Conv2d(8, 16, 3, padding=1))
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255)

    def forward(self, images):
        x = images.float().permute(0, 3, 1, 2)
        return self.body((x - self.mean) / self.std)


class CodesAndImages(torch.nn.Module):
    """Two inputs of other dtypes (int64 codes, uint8 images), two outputs (an error map and a latent)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(16, 4)
        self.decode = torch.nn.Conv2d(4, 3, 1)

    def forward(self, codes, images):
        latent = self.embed(codes).permute(0, 3, 1, 2)
        target = images.float().permute(0, 3, 1, 2) / 255.0
        error = ((self.decode(latent) - target) ** 2).mean(1)
        return error, latent


class DataDependent(torch.nn.Module):
    """A branch on a tensor's value: torch.export refuses it, the TorchScript-based exporter traces one side."""

    def forward(self, images):
        x = images.float()
        if x.sum() > 0:
            return x * 2.0
        return x


def run(graph, feeds):
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


IMAGES = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
CODES = np.random.default_rng(1).integers(0, 16, (3, 8, 8), dtype=np.int64)


def test_default_graph_is_dynamo_exported_quietly_with_a_dynamic_batch(capfd):
    model = Features().eval()
    graph = export_onnx_graph(model, (16, 16))
    assert graph.exporter == "dynamo" and graph.fallback_reason is None
    assert capfd.readouterr() == ("", "")  # no exporter warnings or log lines reach the user
    assert graph_io(graph.data) == ({"images": ["batch", 16, 16, 3]}, {"features": ["batch", 16, 8, 8]})
    with torch.inference_mode():
        want = model(torch.from_numpy(IMAGES)).numpy()
    for batch in (1, 3):
        np.testing.assert_allclose(run(graph.data, {"images": IMAGES[:batch]})[0], want[:batch], rtol=1e-4, atol=1e-4)
    assert export_onnx(model, (16, 16))[:4] == graph.data[:4]  # the bytes-only form of the same call


def test_several_named_inputs_and_outputs_of_other_dtypes():
    model = CodesAndImages().eval()
    examples = (torch.from_numpy(CODES[:1]), IMAGES[:1, :8, :8])  # tensors and arrays, batch of one
    data = export_onnx(model, example_inputs=examples, input_names=("codes", "images"), output_names=("error", "latent"))
    inputs, outputs = graph_io(data)
    assert inputs == {"codes": ["batch", 8, 8], "images": ["batch", 8, 8, 3]}
    assert outputs == {"error": ["batch", 8, 8], "latent": ["batch", 4, 8, 8]}
    error, latent = run(data, {"codes": CODES, "images": IMAGES[:, :8, :8]})
    with torch.inference_mode():
        want = model(torch.from_numpy(CODES), torch.from_numpy(IMAGES[:, :8, :8]))
    np.testing.assert_allclose(error, want[0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(latent, want[1].numpy(), rtol=1e-5, atol=1e-6)


def test_fallback_to_the_torchscript_exporter_says_why(caplog, capfd):
    graph = export_onnx_graph(DataDependent(), (4, 4))
    assert graph.exporter == "torchscript" and "data-dependent" in graph.fallback_reason
    assert any("TorchScript-based exporter instead" in r.getMessage() for r in caplog.records)
    assert graph_io(graph.data)[0] == {"images": ["batch", 4, 4, 3]}
    with pytest.raises(EdgeADError, match="dynamo ONNX exporter failed"):
        export_onnx_graph(DataDependent(), (4, 4), exporter="dynamo")
    assert export_onnx_graph(Features(), (16, 16), exporter="torchscript").exporter == "torchscript"


def test_bad_export_requests_are_config_errors():
    with pytest.raises(ConfigError, match="input size"):
        export_onnx(Features())
    with pytest.raises(ConfigError, match="distinct input names"):
        export_onnx(CodesAndImages(), example_inputs=(CODES, IMAGES), input_names=("codes",))
    with pytest.raises(ConfigError, match="exporter"):
        export_onnx(Features(), (16, 16), exporter="tflite")


def tensor_types(data):
    model = onnx.shape_inference.infer_shapes(onnx.load_from_string(data))
    return {v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.input, *model.graph.output]}


def test_fp16_graph_keeps_the_input_preparation_in_fp32_and_outputs_fp32():
    fp32 = export_onnx(Features().eval(), (16, 16))
    fp16 = to_fp16(fp32)
    graph = onnx.load_from_string(fp16).graph
    kept = preparation_nodes(onnx.load_from_string(fp32).graph)
    assert [n.op_type for n in onnx.load_from_string(fp32).graph.node if n.name in kept] == ["Cast", "Transpose", "Sub", "Div"]
    first_casts = [(n.op_type, n.attribute[0].i) for n in graph.node if n.op_type == "Cast"]
    # uint8 -> float32 for the normalisation, then one cast to fp16 for the convolutions, one back for the output
    assert first_casts == [("Cast", onnx.TensorProto.FLOAT), ("Cast", onnx.TensorProto.FLOAT16), ("Cast", onnx.TensorProto.FLOAT)]
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert all(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.initializer if t.name.startswith("body"))
    assert precision_summary(fp16) == {"fp16": 3, "fp32": 3}  # conv, clip, conv | transpose, sub, div
    assert len(fp16) < 0.75 * len(fp32)
    want, got = run(fp32, {"images": IMAGES})[0], run(fp16, {"images": IMAGES})[0]
    assert got.dtype == np.float32 and np.abs(got - want).max() / np.abs(want).max() < 1e-2


def test_fp16_graph_keeps_fragile_ops_in_fp32_and_integer_inputs_untouched():
    fp32 = export_onnx(CodesAndImages().eval(), example_inputs=(CODES, IMAGES[:, :8, :8]), input_names=("codes", "images"), output_names=("error", "latent"))
    fp16 = to_fp16(fp32, fp16_outputs=("latent",))
    types = tensor_types(fp16)
    assert types["codes"] == onnx.TensorProto.INT64 and types["images"] == onnx.TensorProto.UINT8
    assert types["error"] == onnx.TensorProto.FLOAT and types["latent"] == onnx.TensorProto.FLOAT16
    graph = onnx.load_from_string(fp16).graph
    for node in graph.node:
        if node.op_type in ("ReduceMean", "Pow"):
            assert types[node.output[0]] == onnx.TensorProto.FLOAT, node.op_type  # the error map is summed in fp32
    error, latent = run(fp16, {"codes": CODES, "images": IMAGES[:, :8, :8]})
    want_error, want_latent = run(fp32, {"codes": CODES, "images": IMAGES[:, :8, :8]})
    assert latent.dtype == np.float16 and np.abs(latent - want_latent).max() < 1e-2
    assert np.abs(error - want_error).max() / np.abs(want_error).max() < 1e-2
    with pytest.raises(EdgeADError, match="not outputs of the graph"):
        to_fp16(fp32, fp16_outputs=("logits",))
