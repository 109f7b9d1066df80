"""TorchScript backend: imports torch only when chosen; CPU, or CUDA (FP16 engine where exported)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from edgead.artifact import Artifact
from edgead.errors import BackendError
from edgead.runtime.backends.base import Backend, require


class TorchScriptBackend(Backend):
    name = "torchscript"

    def __init__(self, artifact: Artifact, engine: dict[str, Any], device: str) -> None:
        super().__init__(artifact, engine, device)
        self.torch = require("torch", "train")
        if device.startswith("cuda") and not self.torch.cuda.is_available():
            raise BackendError("torch sees no CUDA device here; use --device cpu")
        try:
            self.module = self.torch.jit.load(io.BytesIO(artifact.member(engine["member"])), map_location=device)
        except RuntimeError as exc:
            raise BackendError(f"torch.jit.load could not load {engine['member']}: {exc}") from exc
        self.module.eval()

    def infer(self, images: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            batch = torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8)).to(self.device)
            return self.module(batch).float().cpu().numpy()

    def close(self) -> None:
        if not self._closed:
            self.module = None
        super().close()
