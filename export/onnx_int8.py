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


def quantize_onnx(fp32_graph: bytes, calibration_images: np.ndarray | None, input_name: str | None = None, symmetric: bool = False) -> bytes:
    """FP32 ONNX bytes -> INT8 (QDQ) ONNX bytes; calibration_images: uint8 (N, H, W, 3) good images.

    input_name: the graph input they feed (default: the graph's only input: `images`, small-ae's `frames` or `patches`).

    symmetric: int8 activations with zero point 0 and float biases, as TensorRT requires (slower than uint8 on x86 CPUs).
    """
    if calibration_images is None or len(calibration_images) == 0:
        raise ConfigError("ONNX INT8 needs calibration images: pass --calib DIR with good images")
    try:
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise DependencyError("ONNX INT8 needs onnxruntime's quantization tools: pip install 'edgead[onnx]'") from None

    input_name, input_hw = _image_input(fp32_graph, input_name)
    calibration_images = _fit_to_input(calibration_images, input_hw)

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


def _image_input(graph: bytes, input_name: str | None) -> tuple[str, tuple[int, int] | None]:
    """The input the calibration images feed (by default the graph's one input) and its (H, W) where the graph fixes them.

    A graph with several inputs (codes, ...) cannot be calibrated on images alone.
    """
    import onnx

    inputs = {tensor.name: tensor for tensor in onnx.load_from_string(graph).graph.input}
    if input_name is None:
        if len(inputs) != 1:
            raise ConfigError(f"INT8 calibration feeds images to a graph with one input; this graph has {list(inputs)}: export it in fp16 or fp32 instead")
        (input_name,) = inputs
    dims = inputs[input_name].type.tensor_type.shape.dim if input_name in inputs else []
    if len(dims) == 4 and dims[1].HasField("dim_value") and dims[2].HasField("dim_value"):
        return input_name, (dims[1].dim_value, dims[2].dim_value)
    return input_name, None  # dynamic height and width: whole images


def _fit_to_input(images: np.ndarray, hw: tuple[int, int] | None, limit: int = 256) -> np.ndarray:
    """Calibration images as the graph sees them: whole, or cut into the patches of a patch graph's input size.

    A patch graph (small-ae's 63 px `patches`) is fed crops of frames at run time; it is calibrated on crops of the
    good images on a grid (half a patch apart), up to `limit` of them spread evenly over the images.
    """
    if hw is None or tuple(images.shape[1:3]) == tuple(hw):
        return images
    (h, w), (height, width) = hw, images.shape[1:3]
    if h > height or w > width:
        raise ConfigError(f"the graph takes {h}x{w} px inputs, larger than the {height}x{width} px calibration images; pass --calib DIR with larger good images")
    ys = np.unique(np.r_[np.arange(0, height - h + 1, max(1, h // 2)), height - h])
    xs = np.unique(np.r_[np.arange(0, width - w + 1, max(1, w // 2)), width - w])
    origins = [(n, y, x) for n in range(len(images)) for y in ys for x in xs]
    picked = np.linspace(0, len(origins) - 1, min(limit, len(origins))).round().astype(int)
    return np.stack([images[n, y : y + h, x : x + w] for n, y, x in (origins[i] for i in picked)])
