"""ONNX Runtime backend: CPU, or CUDA where onnxruntime-gpu is installed."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgead.artifact import Artifact
from edgead.errors import BackendError
from edgead.runtime.backends.base import Backend, require


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
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def infer(self, images: np.ndarray) -> np.ndarray:
        images = np.ascontiguousarray(images, dtype=np.uint8)
        if self.device_type == "cpu":
            return self.session.run(None, {self.input_name: images})[0]
        return self.infer_bound(images, self.device_type, self.device_id)

    def infer_bound(self, images: np.ndarray, device_type: str, device_id: int = 0) -> np.ndarray:
        """I/O binding: the input is copied to the device once, the output stays there until one copy back."""
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.input_name, np.ascontiguousarray(images, dtype=np.uint8))
        binding.bind_output(self.output_name, device_type, device_id)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def close(self) -> None:
        if not self._closed:
            self.session = None
        super().close()
