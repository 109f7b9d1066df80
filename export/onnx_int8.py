"""INT8 Q/DQ graphs: static QDQ quantization with ONNX Runtime, calibrated on good images.

Weights per channel (int8), activations per tensor with ranges from the calibration images. Two flavours:
for ONNX Runtime on CPUs, uint8 activations with a zero point (x86's fast U8S8 kernels) and 7-bit weights;
for TensorRT, symmetric int8 activations (zero point 0), the only scheme TensorRT reads: its INT8 engines
(TensorRT 10 and 11, strongly typed) are built from that graph. The graph keeps its uint8 NHWC input.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from edgead.errors import ConfigError, DependencyError, EdgeADError


def quantize_onnx(fp32_graph: bytes, calibration_images: np.ndarray | None, input_name: str = "images", symmetric: bool = False) -> bytes:
    """FP32 ONNX bytes -> INT8 (QDQ) ONNX bytes; calibration_images: uint8 (N, H, W, 3) good images.

    symmetric: int8 activations with zero point 0 and float biases, as TensorRT requires (slower than uint8 on x86 CPUs).
    """
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
                activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                # CPUs: x86 without VNNI sums u8 x s8 products in saturating int16 pairs (vpmaddubsw); 7-bit weights
                # cannot saturate there (error 0.147 -> 0.070 of the range on an AVX2-only CPU, unchanged with VNNI).
                # TensorRT accumulates in int32 and keeps the full 8 bits.
                reduce_range=not symmetric,
                # TensorRT: zero points 0, biases left in float (it has no int32 bias dequantization)
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False} if symmetric else {},
            )
        except Exception as exc:  # the quantizer raises many types; all mean the same to the user
            raise EdgeADError(f"ONNX Runtime could not quantize the graph to INT8: {exc}") from exc
        finally:
            quiet.setLevel(level)
        return target.read_bytes()
