"""One table of formats drives export, parity checks and the manifest's engine entries."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgead.artifact import Artifact, sha256_bytes
from edgead.errors import ConfigError, DependencyError
from edgead.graphs import GraphSpec

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class ExportOptions:
    """What a build may need beyond the model: batch profile, workspace, calibration data, caches."""

    precision: str = "fp32"
    batch_profile: tuple[int, int, int] = (1, 8, 32)
    workspace_mb: int = 1024
    calibration_images: np.ndarray | None = None
    cache_dir: Path | None = None
    int8_mode: str = "qdq"  # TensorRT INT8: "qdq" (explicit, TensorRT 10 and 11) or "calibrator" (TensorRT 10 only)


@dataclass
class ModelSource:
    """What one graph's engines are built from: its eager module (needs torch) and/or the artifact's FP32 ONNX graph.

    TensorRT builds from the ONNX graph already in the artifact when there is one — the graph whose
    parity was checked at training time — so a device without torch can still build its engines.
    """

    spec: GraphSpec
    model: Any | None
    onnx: bytes | None = None

    def require_model(self, what: str) -> Any:
        if self.model is None:
            raise DependencyError(f"{what} export rebuilds the model from its weights and needs torch: pip install 'edgead[train]'")
        return self.model

    def onnx_graph(self) -> bytes:
        if self.onnx is None:
            from edgead.export.onnx import export_onnx

            self.onnx = export_onnx(self.require_model("ONNX"), spec=self.spec)
        return self.onnx

    @property
    def image_hw(self) -> tuple[int, int]:
        """(H, W) of an image input (N, H, W, 3): what TensorRT's profile and INT8 calibration are built for."""
        shape = self.spec.inputs[0].shape
        if len(shape) != 4 or shape[3] != 3:
            raise ConfigError(f"graph {self.spec.name!r} takes {shape}, not images; TensorRT builds of it are not supported yet")
        return int(shape[1]), int(shape[2])


@dataclass(frozen=True)
class EngineFormat:
    """An exportable format: the runtime backend that runs it, its precisions and how it is built.

    build(source, options) -> (engine bytes, extra manifest fields).
    unavailable() -> None where this machine can build it, else the reason.
    """

    name: str
    backend: str
    precisions: tuple[str, ...]
    suffix: str
    build: Callable[[ModelSource, ExportOptions], tuple[bytes, dict[str, Any]]]
    unavailable: Callable[[], str | None] = field(default=lambda: None)


def _torch_unavailable() -> str | None:
    try:
        import torch  # noqa: F401
    except ImportError:
        return "torch is not installed (pip install 'edgead[train]')"
    return None


def _build_onnx(source: ModelSource, options: ExportOptions) -> tuple[bytes, dict[str, Any]]:
    from edgead.export.onnx import OPSET

    if options.precision == "int8":  # quantized from the FP32 graph: needs no torch
        from edgead.export.onnx_int8 import quantize_onnx

        images = options.calibration_images
        return quantize_onnx(source.onnx_graph(), images), {"opset": OPSET, "quantization": "static QDQ, per-channel int8 weights", "calibration_images": 0 if images is None else len(images)}
    if options.precision == "fp16":  # precision carried in the graph, converted from the FP32 graph: needs no torch
        from edgead.export.onnx_fp16 import precision_summary, to_fp16

        data = to_fp16(source.onnx_graph())
        return data, {"opset": OPSET, "nodes_by_precision": precision_summary(data)}
    import torch

    from edgead.export.onnx import export_onnx_graph

    graph = export_onnx_graph(source.require_model("ONNX"), spec=source.spec)
    extra = {"opset": OPSET, "torch_version": torch.__version__, "exporter": graph.exporter}
    return graph.data, {**extra, "exporter_fallback_reason": graph.fallback_reason} if graph.fallback_reason else extra


def _build_torchscript(source: ModelSource, options: ExportOptions) -> tuple[bytes, dict[str, Any]]:
    import torch

    from edgead.export.torchscript import export_torchscript

    half = options.precision == "fp16"
    data = export_torchscript(source.require_model("TorchScript"), spec=source.spec, half=half)
    return data, {"intended_device": "cuda" if half else "any", "torch_version": torch.__version__}


def _build_tensorrt(source: ModelSource, options: ExportOptions) -> tuple[bytes, dict[str, Any]]:
    from edgead.export.onnx import fixed_axes
    from edgead.export.tensorrt import build_engine

    cache = options.cache_dir
    first = source.spec.inputs[0].shape
    # the builder takes any named inputs; an image graph's (H, W) is also checked and names the calibration cache
    size = source.image_hw if len(source.spec.inputs) == 1 and len(first) == 4 and first[3] == 3 else None
    built = build_engine(
        fixed_axes(source.onnx_graph(), source.spec),  # engines have fixed axes but the batch: the spec's deployed size
        options.precision,
        size,
        batch_profile=options.batch_profile,
        workspace_mb=options.workspace_mb,
        calibration_images=options.calibration_images,
        calibration_cache=cache / (f"calibration-{size[0]}x{size[1]}.cache" if size else f"calibration-{source.spec.name}.cache") if cache else None,
        timing_cache=cache / "timing.cache" if cache else None,
        engine_cache_dir=cache / "engines" if cache else None,
        int8_mode=options.int8_mode,
    )
    return built.data, dict(built.info)


def _tensorrt_unavailable() -> str | None:
    from edgead.export.tensorrt import tensorrt_available

    return tensorrt_available()


FORMATS: dict[str, EngineFormat] = {
    "tensorrt": EngineFormat("tensorrt", "tensorrt", PRECISIONS, "plan", _build_tensorrt, _tensorrt_unavailable),
    # ONNX FP32 is the source of every other graph; FP16 carries its precision in the graph (CUDA, TensorRT); INT8 is for CPUs
    "onnx": EngineFormat("onnx", "onnxruntime", PRECISIONS, "onnx", _build_onnx, _torch_unavailable),
    "torchscript": EngineFormat("torchscript", "torchscript", ("fp32", "fp16"), "ts", _build_torchscript, _torch_unavailable),
}


def choose_formats(format_name: str | None, precision: str) -> tuple[list[EngineFormat], list[str]]:
    """The formats to build for a request, and notes for the user about what was left out and why.

    format_name None means "the best this machine can build": TensorRT where it can run,
    otherwise ONNX (FP32, or INT8 for CPUs) and TorchScript in the requested precision.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if format_name not in (None, "all", *FORMATS):
        raise ConfigError(f"unknown format {format_name!r}; choose one of {', '.join(FORMATS)} or all")
    notes: list[str] = []
    if format_name in FORMATS:
        fmt = FORMATS[format_name]
        if precision not in fmt.precisions:
            raise ConfigError(f"{fmt.name} is exported in {'/'.join(fmt.precisions)} only, not {precision}")
        reason = fmt.unavailable()
        if reason:
            raise ConfigError(f"cannot build {fmt.name} here: {reason}")
        return [fmt], notes
    trt_reason = FORMATS["tensorrt"].unavailable()
    if format_name is None and trt_reason is None:
        return [FORMATS["tensorrt"]], notes
    if trt_reason:
        notes.append(
            f"TensorRT engines were not built: {trt_reason}. Engines are specific to a TensorRT version and GPU; "
            "build them on the device with jetson/build_engines.sh (or `edgead export --engine fp16` there)."
        )
    chosen = [f for f in FORMATS.values() if f.unavailable() is None]
    if format_name is None:
        chosen = [f for f in chosen if f.name != "tensorrt"]
    if not chosen:
        raise ConfigError(f"no format can be built here: TensorRT: {trt_reason}; ONNX and TorchScript: {_torch_unavailable()}")
    chosen = [f for f in chosen if precision in f.precisions or (f.name == "onnx")]
    if not chosen:
        raise ConfigError(f"no {precision} format can be built here: TensorRT: {trt_reason}; ONNX and TorchScript: {_torch_unavailable()}")
    if precision == "int8" and all(f.name != "tensorrt" for f in chosen):
        notes.append("INT8 here is ONNX Runtime's static quantization, for CPUs; TensorRT INT8 engines are built on the device.")
    if precision == "fp16" and any(f.name == "onnx" for f in chosen):
        notes.append("ONNX FP16 runs fast on CUDA (onnxruntime-gpu); ONNX Runtime's CPU provider computes it in FP32 and is slower than the FP32 graph there.")
    return chosen, notes


def engine_precision(fmt: EngineFormat, requested: str) -> str:
    return requested if requested in fmt.precisions else "fp32"


def engine_member(fmt: EngineFormat, precision: str, graph: str) -> str:
    return f"engines/{graph}.{precision}.{fmt.suffix}"


def add_engine(
    manifest: dict[str, Any], members: dict[str, bytes], fmt: EngineFormat, source: ModelSource, options: ExportOptions
) -> dict[str, Any]:
    """Build `fmt` of `source`'s graph into `members` and record it in `manifest['engines']`.

    An entry of the same graph, backend and precision is replaced.
    """
    spec = source.spec
    data, extra = fmt.build(source, options)
    member = engine_member(fmt, options.precision, spec.name)
    members[member] = data
    entry = {
        "graph": spec.name,
        "backend": fmt.backend,
        "format": fmt.name,
        "precision": options.precision,
        "member": member,
        "sha256": sha256_bytes(data),
        "input_shapes": {t.name: list(t.shape) for t in spec.inputs},
        "output_shapes": {t.name: list(t.shape) for t in spec.outputs},
        "dynamic_batch": True,
        **extra,
    }
    manifest["engines"] = [
        e for e in manifest["engines"]
        if not (e.get("graph") == spec.name and e["backend"] == fmt.backend and e["precision"] == options.precision)
    ] + [entry]
    manifest["members"] = {name: {"sha256": sha256_bytes(d)} for name, d in members.items()}
    return entry


def in_memory(manifest: dict[str, Any], members: dict[str, bytes]) -> Artifact:
    return Artifact(path=Path("<in memory>"), manifest=manifest, members=members)
