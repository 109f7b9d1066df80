"""doctor names ONNX Runtime's providers for what they run and says what the installed TensorRT major builds."""

import types

from edgead.doctor import _providers, _tensorrt_text, report_lines


def test_providers_are_named_and_missing_gpu_ones_said():
    gpu = types.SimpleNamespace(get_available_providers=lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    cpu = types.SimpleNamespace(get_available_providers=lambda: ["CPUExecutionProvider"])
    assert _providers(gpu) == (
        "TensorrtExecutionProvider = TensorRT (FP32/FP16 graphs on CUDA), CUDAExecutionProvider = CUDA (FP16 graph on the GPU), "
        "CPUExecutionProvider = CPU"
    )
    assert "no TensorrtExecutionProvider or CUDAExecutionProvider: pip install onnxruntime-gpu" in _providers(cpu)


def test_tensorrt_major_is_explained():
    assert "--int8-calibrator available" in _tensorrt_text("10.3.0.30")
    assert "strongly typed engines only" in _tensorrt_text("11.4.0.106") and "no INT8 calibrator" in _tensorrt_text("12.0.0")
    assert "needs TensorRT 10" in _tensorrt_text("8.6.1")


def test_report_runs_here():
    lines = report_lines()
    assert any(line.startswith("onnxruntime") and "CPUExecutionProvider" in line for line in lines)
