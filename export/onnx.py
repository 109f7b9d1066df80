"""ONNX export of the patch feature graph: uint8 NHWC in, patch features out, dynamic batch."""

from __future__ import annotations

import io
import warnings

import torch

from edgead.errors import DependencyError, EdgeADError

OPSET = 17
INPUT_NAME = "images"
OUTPUT_NAME = "features"


def export_onnx(model: torch.nn.Module, size_px: tuple[int, int], opset: int = OPSET) -> bytes:
    """Serialise `model` to ONNX bytes with a dynamic batch axis, checked by the ONNX checker."""
    try:
        import onnx
    except ImportError:
        raise DependencyError("ONNX export needs the onnx package: pip install 'edgead[onnx]'") from None
    example = torch.zeros((1, *size_px, 3), dtype=torch.uint8)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # the TorchScript-based exporter is deprecated upstream but needs no onnxscript and is exact here
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (example,),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            do_constant_folding=True,
        )
    data = buffer.getvalue()
    try:
        onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    except Exception as exc:  # the checker raises its own ValidationError types
        raise EdgeADError(f"the exported ONNX graph failed the ONNX checker: {exc}") from exc
    return data
