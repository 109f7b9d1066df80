"""ONNX export of a detector's graph (by default the patch feature graph: uint8 NHWC in, features out), dynamic batch."""

from __future__ import annotations

import io
import warnings

import torch

from edgead.errors import DependencyError, EdgeADError
from edgead.graphs import GraphSpec, graph_spec

OPSET = 17
INPUT_NAME = "images"
OUTPUT_NAME = "features"


def image_graph(size_px: tuple[int, int], channels: int | str = "C", name: str = "features") -> GraphSpec:
    """The feature graph's interface: uint8 images (N, H, W, 3) in, `features` out."""
    return graph_spec(name, {INPUT_NAME: (("batch", *size_px, 3), "uint8")}, {OUTPUT_NAME: (("batch", channels), "float32")})


def export_onnx(model: torch.nn.Module, size_px: tuple[int, int] | None = None, opset: int = OPSET, spec: GraphSpec | None = None) -> bytes:
    """Serialise `model` to ONNX bytes with a dynamic batch axis on every input and output, checked by the ONNX checker.

    `spec` names the graph's inputs and outputs and gives the example input's shape and dtype;
    without it, the feature graph of images of `size_px`.
    """
    try:
        import onnx
    except ImportError:
        raise DependencyError("ONNX export needs the onnx package: pip install 'edgead[onnx]'") from None
    spec = spec or image_graph(size_px)
    examples = tuple(torch.from_numpy(t.example(1)) for t in spec.inputs)
    names = spec.input_names + spec.output_names
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # the TorchScript-based exporter is deprecated upstream but needs no onnxscript and is exact here
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            examples,
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=spec.input_names,
            output_names=spec.output_names,
            dynamic_axes={name: {0: "batch"} for name in names},
            do_constant_folding=True,
        )
    data = buffer.getvalue()
    try:
        onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    except Exception as exc:  # the checker raises its own ValidationError types
        raise EdgeADError(f"the exported ONNX graph failed the ONNX checker: {exc}") from exc
    return data
