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
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in available:
                raise BackendError(f"onnxruntime has no CUDA provider here (it has {available}); install onnxruntime-gpu or use --device cpu")
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
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

    def infer(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(images, dtype=np.uint8)})[0]

    def close(self) -> None:
        if not self._closed:
            self.session = None
        super().close()
