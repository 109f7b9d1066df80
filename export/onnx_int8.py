"""ONNX INT8 for CPUs: static QDQ quantization with ONNX Runtime, calibrated on good images.

Weights per channel (int8), activations per tensor (uint8) with ranges from the calibration images.
The graph keeps its uint8 NHWC input; TensorRT INT8 engines are built from the FP32 graph instead.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from edgead.errors import ConfigError, DependencyError, EdgeADError


def quantize_onnx(fp32_graph: bytes, calibration_images: np.ndarray | None, input_name: str = "images") -> bytes:
    """FP32 ONNX bytes -> INT8 (QDQ) ONNX bytes; calibration_images: uint8 (N, H, W, 3) good images."""
    if calibration_images is None or len(calibration_images) == 0:
        raise ConfigError("ONNX INT8 needs calibration images: pass --calib DIR with good images")
    try:
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise DependencyError("ONNX INT8 needs onnxruntime's quantization tools: pip install 'edgead[onnx]'") from None

    class Images(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter([{input_name: calibration_images[i : i + 1]} for i in range(len(calibration_images))])

        def get_next(self) -> dict | None:
            return next(self._batches, None)

    quiet = logging.getLogger()  # the quantizer logs advice through the root logger
    level = quiet.level
    with tempfile.TemporaryDirectory(prefix="edgead-int8-") as tmp:
        source, prepared, target = Path(tmp, "fp32.onnx"), Path(tmp, "prepared.onnx"), Path(tmp, "int8.onnx")
        source.write_bytes(fp32_graph)
        try:
            quiet.setLevel(logging.ERROR)
            # shape inference and graph folding first, as ONNX Runtime recommends for static quantization
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            quantize_static(
                str(prepared), str(target), Images(), quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
            )
        except Exception as exc:  # the quantizer raises many types; all mean the same to the user
            raise EdgeADError(f"ONNX Runtime could not quantize the graph to INT8: {exc}") from exc
        finally:
            quiet.setLevel(level)
        return target.read_bytes()
