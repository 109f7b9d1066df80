"""TensorRT engines from ONNX graphs that carry their precision, on TensorRT 10 and 11 alike, cached.

TensorRT 11 (PyPI, desktop and server GPUs) builds only strongly typed networks: its FP16/INT8 builder
flags, INT8 calibrators and calibration profile are gone. So an engine's precision comes from its graph:
FP32 from the FP32 ONNX graph, FP16 from the FP16 graph (`onnx_fp16`), INT8 from the symmetric Q/DQ graph
(`onnx_int8`), each parsed into a strongly typed network — on TensorRT 10 (Jetson Orin, JetPack 6) with
the STRONGLY_TYPED creation flag, on 11 by default. The builder flags remain for one case only: TensorRT
10's entropy calibrator (`int8_mode="calibrator"`), where a user asks for it.

Graph inputs have the batch first; one optimisation profile covers the batch range for all of them. Two
caches make rebuilds cheap: the timing cache (tactic timings, any engine on this GPU) and the engine cache
(a finished .plan, keyed by everything that makes it differ, the TensorRT major version included).
tensorrt and cuda-python are imported only when a build starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgead.artifact import sha256_bytes
from edgead.errors import BackendError, ConfigError, EdgeADError
from edgead.runtime import cuda
from edgead.runtime.backends.tensorrt_common import create_native, describe_messages, import_tensorrt, tensorrt_logger, tensorrt_major, version_triple

PRECISIONS = ("fp32", "fp16", "int8")
INT8_MODES = ("qdq", "calibrator")
# bumped when the FP16 / Q/DQ graphs derived from an FP32 graph change: cached engines of older graphs are not reused
GRAPH_RECIPE = 1


@dataclass(frozen=True)
class BuiltEngine:
    """A serialised engine and what the manifest records about it."""

    data: bytes
    info: dict[str, Any]


def tensorrt_available() -> str | None:
    """None when engines can be built and run here, else the reason (not installed, no GPU)."""
    try:
        import_tensorrt()
        count = cuda.device_count()
    except EdgeADError as exc:
        return str(exc)
    return None if count > 0 else "no CUDA GPU is visible on this machine"


@dataclass(frozen=True)
class BuildPlan:
    """How an engine of one precision is built on one TensorRT major version."""

    precision: str
    graph: str  # the ONNX graph parsed: "fp32", "fp16" or "int8-qdq"
    strongly_typed: bool
    builder_flags: tuple[str, ...] = ()  # names in trt.BuilderFlag; TensorRT 10's calibrator path only
    calibrator: bool = False


def plan_build(major: int, precision: str, int8_mode: str = "qdq") -> BuildPlan:
    """The graph, typing and flags for `precision` on TensorRT `major` (10 or 11 and later)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"TensorRT precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if int8_mode not in INT8_MODES:
        raise ConfigError(f"INT8 mode {int8_mode!r} is not one of {', '.join(INT8_MODES)}")
    if major < 10:
        raise BackendError(f"TensorRT {major} is too old: edgead builds with TensorRT 10 or later (JetPack 6 on a Jetson)")
    if precision == "int8" and int8_mode == "calibrator":
        if major >= 11:
            raise ConfigError(
                f"TensorRT {major} has no INT8 calibrator (removed in 11): build INT8 from the Q/DQ graph instead "
                "(`edgead export --engine int8` without --int8-calibrator)"
            )
        # implicit quantization: layers TensorRT does not run in INT8 fall back to FP16, not FP32
        return BuildPlan(precision, "fp32", strongly_typed=False, builder_flags=("FP16", "INT8"), calibrator=True)
    return BuildPlan(precision, {"fp32": "fp32", "fp16": "fp16", "int8": "int8-qdq"}[precision], strongly_typed=True)


def network_flags(trt: Any, major: int, plan: BuildPlan) -> int:
    """create_network's flags: TensorRT 11 is strongly typed always (its flag is deprecated and ignored); 10 opts in."""
    if not plan.strongly_typed or major >= 11:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def typed_graph(fp32_graph: bytes, plan: BuildPlan, calibration_images: np.ndarray | None) -> bytes:
    """The ONNX graph whose tensors carry the plan's precision, derived from the FP32 graph."""
    if plan.graph == "fp16":
        from edgead.export.onnx_fp16 import to_fp16

        return to_fp16(fp32_graph)
    if plan.graph == "int8-qdq":
        from edgead.export.onnx_int8 import quantize_onnx

        return quantize_onnx(fp32_graph, calibration_images, _single_input_name(fp32_graph), symmetric=True)
    return fp32_graph


def _single_input_name(graph: bytes) -> str:
    from edgead.export.onnx import graph_io

    inputs, _ = graph_io(graph)
    if len(inputs) != 1:
        raise ConfigError(f"INT8 calibration feeds one image input; this graph has {sorted(inputs)}: build fp16 instead")
    return next(iter(inputs))


def engine_cache_key(
    onnx_sha256: str,
    precision: str,
    batch_profile: tuple[int, int, int],
    input_hw: tuple[int, int] | None,
    tensorrt_version: str,
    compute_capability: str,
    calibration_sha256: str | None = None,
    int8_mode: str = "qdq",
) -> str:
    """sha256 naming a cached engine: graph, precision, shapes, TensorRT release and major, GPU, (INT8) calibration."""
    parts = {
        "onnx": onnx_sha256,
        "precision": precision,
        "batch_profile": [int(b) for b in batch_profile],
        "input_hw": [int(s) for s in input_hw] if input_hw is not None else None,
        "tensorrt": tensorrt_version,
        "tensorrt_major": version_triple(tensorrt_version)[0],
        "gpu": compute_capability,
        "calibration": calibration_sha256 if precision == "int8" else None,
        "int8_mode": int8_mode if precision == "int8" else None,
        "graph_recipe": GRAPH_RECIPE,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_arguments(precision, input_hw, batch_profile, workspace_mb, calibration_images, calibration_cache, int8_mode="qdq") -> None:
    plan_build(10, precision, int8_mode)  # names checked; what the installed TensorRT can do is checked once it is imported
    low, opt, high = batch_profile
    if not 1 <= low <= opt <= high:
        raise ConfigError(f"batch profile {tuple(batch_profile)} must be min <= opt <= max, all >= 1")
    if (input_hw is not None and (len(input_hw) != 2 or min(input_hw) < 1)) or workspace_mb < 1:
        raise ConfigError(f"input size {input_hw} and workspace {workspace_mb} MiB must be positive")
    if precision != "int8":
        return
    if calibration_images is None:
        if int8_mode == "calibrator" and calibration_cache is not None and Path(calibration_cache).is_file():
            return  # TensorRT 10's calibrator can start from its cache alone
        raise ConfigError(
            "INT8 needs calibration images (good images, uint8 at the model input size)"
            + (" or an existing calibration cache" if int8_mode == "calibrator" else "")
            + "; pass a calibration folder, or build fp16 instead"
        )
    if calibration_images.dtype != np.uint8 or calibration_images.ndim != 4 or calibration_images.shape[-1] != 3:
        raise ConfigError(f"calibration images must be uint8 (N, H, W, 3), not {calibration_images.dtype} {calibration_images.shape}")
    if input_hw is not None and calibration_images.shape[1:3] != tuple(input_hw):
        raise ConfigError(f"calibration images must be uint8 (N, {input_hw[0]}, {input_hw[1]}, 3), not {calibration_images.dtype} {calibration_images.shape}")
    if len(calibration_images) < low:
        raise ConfigError(f"INT8 calibration needs at least {low} images (the profile's smallest batch); got {len(calibration_images)}")


def _named_shape(shape: Any) -> list[Any]:
    dims = [int(d) for d in shape]
    return ["batch" if i == 0 and d < 0 else d for i, d in enumerate(dims)]


def _load_cached(plan: Path, meta: Path) -> BuiltEngine | None:
    if not (plan.is_file() and meta.is_file()):
        return None
    data = plan.read_bytes()
    try:
        info = json.loads(meta.read_text())
    except ValueError:
        return None
    if not isinstance(info, dict) or info.get("sha256") != sha256_bytes(data):
        return None  # a torn or edited file: rebuild rather than trust it
    return BuiltEngine(data, {**info, "cache_hit": True, "build_s": 0.0})


def build_engine(
    onnx_bytes: bytes,
    precision: str,
    input_hw: tuple[int, int] | None = None,
    batch_profile: tuple[int, int, int] = (1, 8, 16),
    workspace_mb: int = 1024,
    calibration_images: np.ndarray | None = None,
    calibration_cache: Path | None = None,
    timing_cache: Path | None = None,
    engine_cache_dir: Path | None = None,
    int8_mode: str = "qdq",
) -> BuiltEngine:
    """Build (or fetch from `engine_cache_dir`) a TensorRT engine for this GPU from the FP32 ONNX graph's bytes.

    The FP16 and Q/DQ graphs are derived from it (see the module docstring). input_hw: (H, W) in pixels of an
    image input, checked when given; batch_profile: (min, opt, max) items per batch;
    calibration_images: uint8 (N, H, W, 3), INT8 only; int8_mode: "qdq" (TensorRT 10 and 11) or "calibrator" (10 only).
    """
    _check_arguments(precision, input_hw, batch_profile, workspace_mb, calibration_images, calibration_cache, int8_mode)
    calibration_cache = Path(calibration_cache) if calibration_cache is not None else None
    trt = import_tensorrt()
    major = tensorrt_major(trt.__version__)
    plan = plan_build(major, precision, int8_mode)
    if cuda.device_count() == 0:
        raise BackendError("building a TensorRT engine needs a CUDA GPU and none is visible here; build on the target device")
    cc_major, cc_minor = cuda.compute_capability(0)
    gpu = f"sm_{cc_major}{cc_minor}"
    calibration_sha = None
    if precision == "int8":
        source = calibration_images.tobytes() if calibration_images is not None else calibration_cache.read_bytes()
        calibration_sha = sha256_bytes(source)
    key = engine_cache_key(sha256_bytes(onnx_bytes), precision, batch_profile, input_hw, trt.__version__, gpu, calibration_sha, int8_mode)
    if engine_cache_dir is not None:
        cached = _load_cached(Path(engine_cache_dir) / f"{key}.plan", Path(engine_cache_dir) / f"{key}.json")
        if cached is not None:
            return cached

    info = {
        "tensorrt_version": trt.__version__, "tensorrt_major": major, "compute_capability": gpu, "precision": precision,
        "batch_profile": list(batch_profile), "build_plan": asdict(plan),
    }
    graph = onnx_bytes if plan.calibrator else typed_graph(onnx_bytes, plan, calibration_images)
    info["graph_sha256"] = sha256_bytes(graph)
    data = _build(trt, major, plan, graph, input_hw, tuple(batch_profile), workspace_mb, calibration_images, calibration_cache, timing_cache, info)
    info.update(sha256=sha256_bytes(data), cache_key=key, cache_hit=False)
    if engine_cache_dir is not None:
        _write_atomic(Path(engine_cache_dir) / f"{key}.plan", data)
        _write_atomic(Path(engine_cache_dir) / f"{key}.json", json.dumps(info, indent=2).encode())
    return BuiltEngine(data, info)


def _parse(trt: Any, builder: Any, major: int, plan: BuildPlan, graph: bytes, logger: Any) -> tuple[Any, Any]:
    network = builder.create_network(network_flags(trt, major, plan))
    parser = trt.OnnxParser(network, logger)  # kept alive until the build: it owns the parsed weights
    if not parser.parse(graph):
        errors = [parser.get_error(i) for i in range(parser.num_errors)]
        lines = [f"node {e.node()}: {e.desc()}" for e in errors] or ["(no parser error recorded)"]
        raise EdgeADError("TensorRT's ONNX parser rejected the graph:\n  " + "\n  ".join(lines))
    return network, parser


def _check_inputs(inputs: list[Any], input_hw: tuple[int, int] | None, batch_profile: tuple[int, int, int]) -> None:
    """Every input: batch first (dynamic, or static and equal to a one-size profile), the other axes fixed."""
    for tensor in inputs:
        shape = tuple(tensor.shape)
        static_batch_ok = len(shape) > 0 and (shape[0] < 0 or batch_profile == (shape[0],) * 3)
        if not shape or not static_batch_ok or any(d < 0 for d in shape[1:]):
            raise ConfigError(f"the ONNX input {tensor.name!r} is {shape}; expected the batch first and fixed other axes for batches {batch_profile}")
    if input_hw is not None and len(inputs) == 1:
        shape, want = tuple(inputs[0].shape), (*input_hw, 3)
        if len(shape) != 4 or shape[1:] != want:
            raise ConfigError(f"the ONNX input {inputs[0].name!r} is {shape}; expected (batch, {want[0]}, {want[1]}, 3) for batches {batch_profile}")


def _build(trt, major, plan, graph, input_hw, batch_profile, workspace_mb, calibration_images, calibration_cache, timing_cache, info) -> bytes:
    """Parse, configure and build; fills `info` with shapes, dtypes and build time."""
    logger = tensorrt_logger()
    calibrator = calibration_batch = None
    with logger.capture() as messages:
        builder = create_native(lambda: trt.Builder(logger), "a builder", messages)
        network, parser = _parse(trt, builder, major, plan, graph, logger)  # the parser owns the weights: kept to the end
        inputs = [network.get_input(i) for i in range(network.num_inputs)]
        outputs = [network.get_output(i) for i in range(network.num_outputs)]
        _check_inputs(inputs, input_hw, batch_profile)

        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
        profile = builder.create_optimization_profile()
        for tensor in inputs:
            item = tuple(tensor.shape)[1:]
            profile.set_shape(tensor.name, *[(b, *item) for b in batch_profile])
        if config.add_optimization_profile(profile) < 0:
            raise EdgeADError(f"TensorRT refused the batch profile {batch_profile}. {describe_messages(messages)}")
        for flag in plan.builder_flags:  # TensorRT 10's calibrator path only: 11 has none of these flags
            config.set_flag(getattr(trt.BuilderFlag, flag))
        if plan.calibrator:
            from edgead.export.tensorrt_calibrator import attach_calibrator

            calibration_batch = 1 if calibration_images is None else min(batch_profile[1], len(calibration_images))
            calibrator = attach_calibrator(trt, builder, config, inputs[0], calibration_images, calibration_batch, calibration_cache, _write_atomic)
        _use_timing_cache(config, timing_cache)

        try:
            started = time.perf_counter()
            serialized = builder.build_serialized_network(network, config)
            info["build_s"] = round(time.perf_counter() - started, 3)
        finally:
            if calibrator is not None:
                calibrator.close()
        if calibrator is not None and calibrator.error is not None:
            raise EdgeADError(f"INT8 calibration failed: {calibrator.error}") from calibrator.error
        if serialized is None:
            hint = " (TensorRT needs the uint8 input to feed a Cast directly: cast before any transpose)" if any("uint8" in m.lower() for m in messages) else ""
            raise EdgeADError(f"TensorRT could not build the {plan.precision} engine{hint}. {describe_messages(messages)}")
    if timing_cache is not None:
        _write_atomic(Path(timing_cache), bytes(config.get_timing_cache().serialize()))
    info["input_shapes"] = {t.name: _named_shape(t.shape) for t in inputs}
    info["output_shapes"] = {t.name: _named_shape(t.shape) for t in outputs}
    info["io_dtypes"] = {t.name: _dtype_name(trt, t.dtype) for t in [*inputs, *outputs]}
    if calibrator is not None:
        info["calibration"] = {"images": 0 if calibration_images is None else len(calibration_images), "batch": calibration_batch}
    return bytes(serialized)


def _dtype_name(trt: Any, dtype: Any) -> str:
    try:
        return np.dtype(trt.nptype(dtype)).name
    except TypeError:
        return str(dtype)


def _use_timing_cache(config: Any, path: Path | None) -> None:
    """Start from the timing cache file if there is a usable one, else from an empty cache that gets saved."""
    blob = Path(path).read_bytes() if path is not None and Path(path).is_file() else b""
    cache = config.create_timing_cache(blob)
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return
    # a cache from another TensorRT or GPU is refused; start afresh (the file is rewritten after the build)
    if not config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False):
        raise EdgeADError("TensorRT refused an empty timing cache")
