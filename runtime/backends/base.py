"""The backend interface and the selection ladder: TensorRT, then ONNX Runtime; TorchScript only for a trusted model.

A TorchScript engine is a program (torch.jit.load runs what it says, and it can read and write any file the user
can), so it is opened only when the user trusts the model: `trust_code`, or a signature verified with the user's
key. The ladder moves past a backend only when it is absent here (not installed, no engine in the model, not
trusted); an engine that is there and fails to load is an error that names it.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

import numpy as np

from edgead.artifact import Artifact
from edgead.errors import BackendError, BackendUnavailable, DependencyError
from edgead.graphs import MAIN_GRAPH
from edgead.runtime.devices import CUDA_HELP, is_cuda, parse_device

BACKENDS = ("tensorrt", "onnxruntime", "torchscript")
LADDER = ("tensorrt", "onnxruntime")  # the default ladder; TRUSTED_LADDER for a model the user trusts
TRUSTED_LADDER = BACKENDS
# backends whose engines are programs: loading one runs code from the model file
RUNS_CODE = {"torchscript": "a TorchScript engine is a program: loading it runs code from the model file, which can read and write any file you can"}
TRUST_HELP = "pass --trust-torchscript if you built this model yourself, or sign your models (`edgead sign`) and give --verify-key"

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
    raise BackendUnavailable(f"the model has no {want} {what} for {device} (it has: {have}); build one with `edgead export`")


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
    artifact: Artifact, name: str | None = None, device: str = "cpu", precision: str | None = None, graph: str = MAIN_GRAPH,
    trust_code: bool = False,
) -> Backend:
    """Open `graph`'s engine on the named backend, or on the first of the ladder that is present here.

    `trust_code`: the user trusts the model to run code (TorchScript); a model whose signature was verified with the
    user's key (`artifact.signed_by`) is trusted too. Without trust, TorchScript is never loaded and not on the ladder.
    Backends that are absent are passed over; the first present one opens or raises. The error lists every reason.
    """
    device = parse_device(device)
    if name is not None and name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    trusted = trust_code or artifact.signed_by is not None
    reasons = []
    for candidate in [name] if name else (TRUSTED_LADDER if trusted else LADDER):
        try:
            return _open_one(artifact, candidate, device, precision, graph, trusted)
        except (BackendUnavailable, DependencyError, ImportError) as exc:
            reasons.append(f"{candidate}: {exc}")
        except BackendError as exc:
            if name is None:  # present, and it failed: no quiet move to the next one
                raise BackendError(f"{exc} (the {candidate} backend is here and the model has its engine, so edgead stops "
                                   f"rather than try another; give --backend to choose one)") from exc
            raise
    if name is None and not trusted and any(e.get("backend") in RUNS_CODE for e in artifact.manifest["engines"]):
        reasons.append(f"torchscript: left out: {RUNS_CODE['torchscript']}; {TRUST_HELP}")
    if name is None and is_cuda(device):
        raise BackendError(f"no backend can run this model on {device}: {CUDA_HELP}. Each backend said: " + "; ".join(reasons))
    if name is not None:
        raise BackendError(reasons[0])
    raise BackendError("no backend can run this model: " + "; ".join(reasons))


def _open_one(artifact: Artifact, candidate: str, device: str, precision: str | None, graph: str, trusted: bool) -> Backend:
    if candidate not in _REGISTRY:
        raise BackendUnavailable(f"the {candidate} backend is not part of this edgead release yet")
    if candidate == "tensorrt" and tensorrt_missing():
        raise BackendUnavailable(TENSORRT_MISSING)  # before "no engine: export one", which would fail here too
    if candidate == "tensorrt" and not is_cuda(device):
        raise BackendUnavailable(f"TensorRT runs on CUDA GPUs only, not on {device}")
    entry = _engine_for(artifact, candidate, precision, device, graph)
    if candidate in RUNS_CODE and not trusted:
        raise BackendUnavailable(f"{entry['member']} not loaded: {RUNS_CODE[candidate]}; {TRUST_HELP}, or use --backend onnxruntime")
    module_name, class_name = _REGISTRY[candidate]
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(artifact, entry, device, trusted=True) if candidate in RUNS_CODE else cls(artifact, entry, device)


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
