"""ONNX Runtime backend: CPU, or CUDA where onnxruntime-gpu is installed."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgead.artifact import Artifact
from edgead.errors import BackendError
from edgead.runtime.backends.base import Backend, require


# ONNX Runtime's tensor type names -> numpy dtypes of graph inputs edgead exports
_ORT_TYPES = {"tensor(uint8)": "uint8", "tensor(int32)": "int32", "tensor(int64)": "int64", "tensor(float16)": "float16", "tensor(float)": "float32"}


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, artifact: Artifact, engine: dict[str, Any], device: str) -> None:
        super().__init__(artifact, engine, device)
        ort = require("onnxruntime", "onnx")
        available = ort.get_available_providers()
        self.device_type, self.device_id = "cpu", 0
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in available:
                raise BackendError(f"onnxruntime has no CUDA provider here (it has {available}); install onnxruntime-gpu or use --device cpu")
            self.device_type, self.device_id = "cuda", int(device.partition(":")[2] or 0)
            providers = [("CUDAExecutionProvider", {"device_id": self.device_id}), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # idle ORT threads otherwise spin after each run and starve the kNN's BLAS threads (10x slower kNN on 2 cores)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(artifact.member(engine["member"]), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BackendError(f"onnxruntime could not load {engine['member']}: {exc}") from exc
        graph_input = self.session.get_inputs()[0]
        self.input_name = graph_input.name
        self.input_dtype = np.dtype(_ORT_TYPES.get(graph_input.type, "uint8"))
        self.output_names = [output.name for output in self.session.get_outputs()]

    def infer(self, inputs: np.ndarray) -> np.ndarray | tuple[np.ndarray, ...]:
        inputs = np.ascontiguousarray(inputs, dtype=self.input_dtype)
        if self.device_type == "cpu":
            outputs = self.session.run(None, {self.input_name: inputs})
        else:
            outputs = self.infer_bound(inputs, self.device_type, self.device_id)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def infer_bound(self, inputs: np.ndarray, device_type: str, device_id: int = 0) -> list[np.ndarray]:
        """I/O binding: the input is copied to the device once, the outputs stay there until one copy back."""
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.input_name, np.ascontiguousarray(inputs, dtype=self.input_dtype))
        for name in self.output_names:
            binding.bind_output(name, device_type, device_id)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def close(self) -> None:
        if not self._closed:
            self.session = None
        super().close()
