"""ONNX Runtime backend: CPU, or CUDA where onnxruntime-gpu is installed, through its TensorRT provider where it has one.

On CUDA the FP16 graph runs in FP16 (its precision is in the graph). The TensorRT execution provider, where
onnxruntime-gpu lists it, goes first for FP32 and FP16 graphs, with its engine and timing caches under
~/.cache/edgead/onnxruntime-tensorrt so that only the first session pays for the build; EDGEAD_ORT_TENSORRT=0
turns it off. The CPU INT8 graph (uint8 activations) is not for TensorRT and runs on the CUDA provider.
Inputs and outputs are the graph's own, by name: one output comes back as an array, several as a tuple.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgead.artifact import Artifact
from edgead.errors import BackendError, BackendUnavailable, DataError
from edgead.runtime.backends.base import Backend, require

_ORT_TYPES = {
    "tensor(uint8)": np.uint8, "tensor(int8)": np.int8, "tensor(int32)": np.int32, "tensor(int64)": np.int64,
    "tensor(float16)": np.float16, "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(bool)": np.bool_,
}


def tensorrt_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgead" / "onnxruntime-tensorrt"


def cuda_providers(available: Sequence[str], device_id: int, precision: str) -> list[Any]:
    """The provider list for a CUDA device: TensorRT (where present and allowed), CUDA, then the CPU for what is left."""
    providers: list[Any] = []
    if "TensorrtExecutionProvider" in available and precision in ("fp32", "fp16") and os.environ.get("EDGEAD_ORT_TENSORRT", "1") != "0":
        cache = tensorrt_cache_dir()
        cache.mkdir(parents=True, exist_ok=True)
        # no trt_fp16_enable: the FP16 graph carries its precision, and TensorRT then builds it strongly typed
        providers.append(("TensorrtExecutionProvider", {
            "device_id": device_id, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache),
        }))
    providers.append(("CUDAExecutionProvider", {"device_id": device_id}))
    return providers + ["CPUExecutionProvider"]


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, artifact: Artifact, engine: dict[str, Any], device: str) -> None:
        super().__init__(artifact, engine, device)
        ort = require("onnxruntime", "onnx")
        available = ort.get_available_providers()
        self.device_type, self.device_id = "cpu", 0
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in available:
                raise BackendUnavailable(f"onnxruntime has no CUDA provider here (it has {available}); install onnxruntime-gpu or use --device cpu")
            self.device_type, self.device_id = "cuda", int(device.partition(":")[2] or 0)
            providers = cuda_providers(available, self.device_id, engine.get("precision", "fp32"))
        else:
            providers = ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # idle ORT threads otherwise spin after each run and starve the kNN's BLAS threads (10x slower kNN on 2 cores)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            with tempfile.TemporaryDirectory(prefix="edgead-no-external-data-") as empty:
                # engines are self-contained; a graph loaded from bytes would read any "external data" it names from the
                # working directory: it is looked for in an empty folder instead (ONNX Runtime refuses paths that leave it)
                options.add_session_config_entry("session.model_external_initializers_file_folder_path", empty)
                self.session = ort.InferenceSession(artifact.member(engine["member"]), options, providers=providers)
        except MemoryError:
            raise BackendError(f"onnxruntime ran out of memory loading {engine['member']}; free memory or use a smaller model") from None
        except Exception as exc:  # onnxruntime raises its own exception types, with messages over several lines
            why = " ".join(str(exc).split())
            raise BackendError(f"onnxruntime could not load {engine['member']}: {why[:400]}") from exc
        self.providers = self.session.get_providers()  # what is active: a provider that failed to load is missing here
        self.inputs = [(i.name, np.dtype(_ORT_TYPES.get(i.type, np.float32))) for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_name, self.output_name = self.inputs[0][0], self.output_names[0]

    def describe(self) -> str:
        return f"{self.name} ({self.engine.get('precision', '?')}, {self.device}, {self.providers[0]})"

    def feeds(self, inputs: Sequence[Any]) -> dict[str, np.ndarray]:
        """Arrays in the graph's input order, or one mapping by name -> contiguous arrays of the graph's dtypes."""
        if len(inputs) == 1 and isinstance(inputs[0], Mapping):
            given = inputs[0]
            if sorted(given) != sorted(name for name, _ in self.inputs):
                raise DataError(f"{self.engine['member']} takes inputs {[n for n, _ in self.inputs]}, not {sorted(given)}")
            inputs = [given[name] for name, _ in self.inputs]
        if len(inputs) != len(self.inputs):
            raise DataError(f"{self.engine['member']} takes {len(self.inputs)} inputs ({', '.join(n for n, _ in self.inputs)}), not {len(inputs)}")
        return {name: np.ascontiguousarray(array, dtype=dtype) for (name, dtype), array in zip(self.inputs, inputs)}

    def infer(self, *inputs: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        """One output: an array (float32 for floating-point outputs); several: a tuple in the graph's order."""
        feeds = self.feeds(inputs)
        if self.device_type == "cpu":
            return _result(self.session.run(None, feeds))
        return _result(self.infer_bound(feeds, self.device_type, self.device_id))

    def infer_bound(self, inputs: Any, device_type: str, device_id: int = 0) -> list[np.ndarray]:
        """I/O binding: inputs copied to the device once, outputs kept there until one copy back each (a list, graph order)."""
        feeds = inputs if isinstance(inputs, dict) else self.feeds(list(inputs) if isinstance(inputs, (list, tuple)) else [inputs])
        binding = self.session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, array)
        for name in self.output_names:
            binding.bind_output(name, device_type, device_id)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def close(self) -> None:
        if not self._closed:
            self.session = None
        super().close()


def _result(outputs: list[np.ndarray]) -> np.ndarray | tuple[np.ndarray, ...]:
    arrays = [o.astype(np.float32) if np.issubdtype(o.dtype, np.floating) and o.dtype != np.float32 else o for o in outputs]
    return arrays[0] if len(arrays) == 1 else tuple(arrays)
