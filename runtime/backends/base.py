"""The backend interface and the selection ladder: TensorRT, then ONNX Runtime, then TorchScript."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

import numpy as np

from edgead.artifact import Artifact
from edgead.errors import BackendError, DependencyError, EdgeADError
from edgead.graphs import MAIN_GRAPH
from edgead.runtime.devices import CUDA_HELP, is_cuda, parse_device

LADDER = ("tensorrt", "onnxruntime", "torchscript")

# backend name -> (module, class); imported only when tried, so no heavy dependency loads early
_REGISTRY = {
    "tensorrt": ("edgead.runtime.backends.tensorrt", "TensorRTBackend"),
    "onnxruntime": ("edgead.runtime.backends.onnxrt", "OnnxRuntimeBackend"),
    "torchscript": ("edgead.runtime.backends.torchscript", "TorchScriptBackend"),
}


class Backend:
    """Runs one exported graph (the manifest's `graphs`): its input batch -> its output(s).

    `infer` returns one array for a graph with one output, else a tuple in the graph's output order.
    """

    name = "base"

    def __init__(self, artifact: Artifact, engine: dict[str, Any], device: str) -> None:
        self.artifact = artifact
        self.engine = engine
        self.device = device
        self._closed = False

    def infer(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> str:
        return f"{self.name} ({self.engine.get('precision', '?')}, {self.device})"


# precisions tried, best first, when the user names none: fast where the hardware is made for it
_PREFERENCE = {"cuda": ("fp16", "fp32", "int8"), "cpu": ("fp32",)}


def _engine_for(artifact: Artifact, backend: str, precision: str | None, device: str, graph: str) -> dict[str, Any]:
    entries = [e for e in artifact.manifest["engines"] if e.get("backend") == backend and e.get("graph") == graph]
    wanted = (precision,) if precision else _PREFERENCE["cuda" if device.startswith("cuda") else "cpu"]
    for choice in wanted:
        for entry in entries:
            if entry.get("precision") == choice:
                return entry
    have = ", ".join(f"{e.get('backend')}/{e.get('precision')}" for e in artifact.manifest["engines"] if e.get("graph") == graph) or "none"
    want = f"{backend}/{'|'.join(wanted)}"
    what = "engine" if graph == MAIN_GRAPH else f"engine of graph {graph!r}"
    raise BackendError(f"the model has no {want} {what} for {device} (it has: {have}); build one with `edgead export`")


TENSORRT_MISSING = (
    "TensorRT is not installed here: it comes with JetPack on a Jetson, or from NVIDIA "
    "(`pip install 'edgead[tensorrt]'`) on a machine with an NVIDIA GPU and driver; "
    "TensorRT engines are then built on that machine with `edgead export --engine fp16`"
)


def tensorrt_missing() -> bool:
    """True when the tensorrt package cannot be found (checked without importing it)."""
    if sys.modules.get("tensorrt") is not None:  # imported already (or a stand-in in tests)
        return False
    try:
        return importlib.util.find_spec("tensorrt") is None
    except (ImportError, ValueError):
        return True


def open_backend(
    artifact: Artifact, name: str | None = None, device: str = "cpu", precision: str | None = None, graph: str = MAIN_GRAPH
) -> Backend:
    """Open `graph`'s engine on the named backend, or on the first of the ladder that can run; the error lists every reason."""
    device = parse_device(device)
    if name is not None and name not in LADDER:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(LADDER)}")
    reasons = []
    for candidate in [name] if name else LADDER:
        try:
            if candidate not in _REGISTRY:
                raise BackendError(f"the {candidate} backend is not part of this edgead release yet")
            if candidate == "tensorrt" and tensorrt_missing():
                raise BackendError(TENSORRT_MISSING)  # before "no engine: export one", which would fail here too
            entry = _engine_for(artifact, candidate, precision, device, graph)
            module_name, class_name = _REGISTRY[candidate]
            cls = getattr(importlib.import_module(module_name), class_name)
            return cls(artifact, entry, device)
        except (EdgeADError, ImportError) as exc:
            reasons.append(f"  {candidate}: {exc}")
    if name is None and is_cuda(device):
        raise BackendError(f"no backend can run this model on {device}: {CUDA_HELP}. Each backend said:\n" + "\n".join(reasons))
    raise BackendError("no backend can run this model:\n" + "\n".join(reasons))


def slow_engine_warning(backend: Backend) -> str | None:
    """Why the opened engine is a poor choice on this device, or None (CPUs have no fast half-precision path)."""
    if backend.engine.get("precision") == "fp16" and not is_cuda(backend.device):
        return (
            f"{backend.name}/fp16 runs on the CPU here, about 30x slower than fp32 (CPUs have no fast half-precision path); "
            "FP16 engines are for CUDA devices: use --device cuda, or --precision fp32 on this machine"
        )
    return None


def require(module: str, extra: str) -> Any:
    """Import an optional dependency or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DependencyError(f"{module} is not installed: pip install 'edgead[{extra}]'") from None
