"""TensorRT engines from the exported ONNX graph: FP32, FP16 or INT8 (entropy calibration), cached.

The network input is uint8 (N, H, W, 3); the graph casts and normalises inside, so calibration batches
are raw images too. One optimisation profile covers the batch range. Two caches make rebuilds cheap:
the timing cache (tactic timings, any engine on this GPU) and the engine cache (a finished .plan, keyed
by everything that makes it differ). tensorrt and cuda-python are imported only when a build starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgead.artifact import sha256_bytes
from edgead.errors import BackendError, ConfigError, EdgeADError
from edgead.runtime import cuda
from edgead.runtime.backends.tensorrt import describe_messages, import_tensorrt, tensorrt_logger

PRECISIONS = ("fp32", "fp16", "int8")


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


def engine_cache_key(
    onnx_sha256: str,
    precision: str,
    batch_profile: tuple[int, int, int],
    input_hw: tuple[int, int],
    tensorrt_version: str,
    compute_capability: str,
    calibration_sha256: str | None = None,
) -> str:
    """sha256 naming a cached engine: graph, precision, shapes, TensorRT release, GPU and (INT8) calibration data."""
    parts = {
        "onnx": onnx_sha256,
        "precision": precision,
        "batch_profile": [int(b) for b in batch_profile],
        "input_hw": [int(s) for s in input_hw],
        "tensorrt": tensorrt_version,
        "gpu": compute_capability,
        "calibration": calibration_sha256 if precision == "int8" else None,
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


def _check_arguments(precision, input_hw, batch_profile, workspace_mb, calibration_images, calibration_cache) -> None:
    if precision not in PRECISIONS:
        raise ConfigError(f"TensorRT precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    low, opt, high = batch_profile
    if not 1 <= low <= opt <= high:
        raise ConfigError(f"batch profile {tuple(batch_profile)} must be min <= opt <= max, all >= 1")
    if len(input_hw) != 2 or min(input_hw) < 1 or workspace_mb < 1:
        raise ConfigError(f"input size {tuple(input_hw)} and workspace {workspace_mb} MiB must be positive")
    if precision != "int8":
        return
    if calibration_images is None:
        if calibration_cache is None or not Path(calibration_cache).is_file():
            raise ConfigError(
                "INT8 needs calibration images (good images, uint8 at the model input size) or an existing "
                "calibration cache; pass a calibration folder, or build fp16 instead"
            )
        return
    shape = (*input_hw, 3)
    if calibration_images.dtype != np.uint8 or calibration_images.ndim != 4 or calibration_images.shape[1:] != shape:
        raise ConfigError(f"calibration images must be uint8 (N, {shape[0]}, {shape[1]}, 3), not {calibration_images.dtype} {calibration_images.shape}")
    if len(calibration_images) < low:
        raise ConfigError(f"INT8 calibration needs at least {low} images (the profile's smallest batch); got {len(calibration_images)}")


def _calibrator(trt: Any, images: np.ndarray | None, batch: int, cache: Path | None) -> Any:
    """An IInt8EntropyCalibrator2 feeding uint8 NHWC batches; reads `cache` only when no images are given."""

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # the binding's trampoline needs its base initialised explicitly
            self.next_index, self.error = 0, None
            self.stream = self.buffer = None
            if images is not None:
                self.stream = cuda.Stream()
                self.buffer = cuda.DeviceBuffer(batch * images[0].nbytes)

        def get_batch_size(self) -> int:
            return batch

        def get_batch(self, names: list[str]) -> list[int] | None:
            # exceptions must not cross into TensorRT: keep the first and end calibration
            if images is None or self.error is not None or self.next_index + batch > len(images):
                return None  # the remainder smaller than a batch is left out
            try:
                chunk = np.ascontiguousarray(images[self.next_index : self.next_index + batch])
                cuda.copy_htod_async(self.buffer.ptr, chunk, self.stream)
                self.stream.synchronize()
            except Exception as exc:
                self.error = exc
                return None
            self.next_index += batch
            return [self.buffer.ptr for _ in names]

        def read_calibration_cache(self) -> bytes | None:
            if images is None and cache is not None and cache.is_file():
                return cache.read_bytes()
            return None

        def write_calibration_cache(self, data: Any) -> None:
            if cache is not None:
                try:
                    _write_atomic(cache, bytes(data))
                except OSError as exc:
                    self.error = EdgeADError(f"could not write the calibration cache {cache}: {exc}")

        def close(self) -> None:
            cuda.close_all([self.stream, self.buffer])

    return EntropyCalibrator()


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
    input_hw: tuple[int, int],
    batch_profile: tuple[int, int, int] = (1, 8, 16),
    workspace_mb: int = 1024,
    calibration_images: np.ndarray | None = None,
    calibration_cache: Path | None = None,
    timing_cache: Path | None = None,
    engine_cache_dir: Path | None = None,
) -> BuiltEngine:
    """Build (or fetch from `engine_cache_dir`) a TensorRT engine for this GPU from ONNX bytes.

    input_hw: (H, W) in pixels; batch_profile: (min, opt, max) images per batch;
    calibration_images: uint8 (N, H, W, 3), INT8 only.
    """
    _check_arguments(precision, input_hw, batch_profile, workspace_mb, calibration_images, calibration_cache)
    calibration_cache = Path(calibration_cache) if calibration_cache is not None else None
    trt = import_tensorrt()
    if cuda.device_count() == 0:
        raise BackendError("building a TensorRT engine needs a CUDA GPU and none is visible here; build on the target device")
    major, minor = cuda.compute_capability(0)
    gpu = f"sm_{major}{minor}"
    calibration_sha = None
    if precision == "int8":
        source = calibration_images.tobytes() if calibration_images is not None else calibration_cache.read_bytes()
        calibration_sha = sha256_bytes(source)
    key = engine_cache_key(sha256_bytes(onnx_bytes), precision, batch_profile, input_hw, trt.__version__, gpu, calibration_sha)
    if engine_cache_dir is not None:
        cached = _load_cached(Path(engine_cache_dir) / f"{key}.plan", Path(engine_cache_dir) / f"{key}.json")
        if cached is not None:
            return cached

    info = {"tensorrt_version": trt.__version__, "compute_capability": gpu, "precision": precision, "batch_profile": list(batch_profile)}
    data = _build(trt, onnx_bytes, precision, tuple(input_hw), tuple(batch_profile), workspace_mb, calibration_images, calibration_cache, timing_cache, info)
    info.update(sha256=sha256_bytes(data), cache_key=key, cache_hit=False)
    if engine_cache_dir is not None:
        _write_atomic(Path(engine_cache_dir) / f"{key}.plan", data)
        _write_atomic(Path(engine_cache_dir) / f"{key}.json", json.dumps(info, indent=2).encode())
    return BuiltEngine(data, info)


def _build(trt, onnx_bytes, precision, input_hw, batch_profile, workspace_mb, calibration_images, calibration_cache, timing_cache, info) -> bytes:
    """Parse, configure and build; fills `info` with shapes and build time."""
    logger = tensorrt_logger()
    calibrator = None
    with logger.capture() as messages:
        builder = trt.Builder(logger)
        network = builder.create_network(0)  # TensorRT 10 networks are always explicit-batch; the flag is gone
        parser = trt.OnnxParser(network, logger)  # kept alive until the build: it owns the parsed weights
        if not parser.parse(onnx_bytes):
            errors = [parser.get_error(i) for i in range(parser.num_errors)]
            lines = [f"node {e.node()}: {e.desc()}" for e in errors] or ["(no parser error recorded)"]
            raise EdgeADError("TensorRT's ONNX parser rejected the graph:\n  " + "\n  ".join(lines))
        if network.num_inputs != 1 or network.num_outputs != 1:
            raise EdgeADError(f"the ONNX graph has {network.num_inputs} inputs and {network.num_outputs} outputs; edgead exports one of each")
        source, sink = network.get_input(0), network.get_output(0)
        shape, want = tuple(source.shape), (*input_hw, 3)
        if len(shape) != 4 or shape[1:] != want or (shape[0] >= 0 and batch_profile != (shape[0],) * 3):
            raise ConfigError(f"the ONNX input {source.name!r} is {shape}; expected (batch, {want[0]}, {want[1]}, 3) for batches {batch_profile}")

        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
        profile = builder.create_optimization_profile()
        profile.set_shape(source.name, *[(b, *want) for b in batch_profile])
        if config.add_optimization_profile(profile) < 0:
            raise EdgeADError(f"TensorRT refused the batch profile {batch_profile}. {describe_messages(messages)}")
        if precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)  # INT8 layers without an int8 kernel fall back to FP16, not FP32
        if precision == "int8":
            calibration_batch = 1 if calibration_images is None else min(batch_profile[1], len(calibration_images))
            calibrator = _calibrator(trt, calibration_images, calibration_batch, calibration_cache)
            config.set_flag(trt.BuilderFlag.INT8)
            config.int8_calibrator = calibrator
            # calibration runs at the calibration profile's shape, which every batch must match exactly
            calibration_profile = builder.create_optimization_profile()
            calibration_profile.set_shape(source.name, *[(calibration_batch, *want)] * 3)
            config.set_calibration_profile(calibration_profile)
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
            raise EdgeADError(f"TensorRT could not build the {precision} engine{hint}. {describe_messages(messages)}")
    if timing_cache is not None:
        _write_atomic(Path(timing_cache), bytes(config.get_timing_cache().serialize()))
    info["input_shapes"] = {source.name: _named_shape(source.shape)}
    info["output_shapes"] = {sink.name: _named_shape(sink.shape)}
    if calibrator is not None:
        info["calibration"] = {"images": 0 if calibration_images is None else len(calibration_images), "batch": calibration_batch}
    return bytes(serialized)


def _use_timing_cache(config: Any, path: Path | None) -> None:
    """Start from the timing cache file if there is a usable one, else from an empty cache that gets saved."""
    blob = Path(path).read_bytes() if path is not None and Path(path).is_file() else b""
    cache = config.create_timing_cache(blob)
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return
    # a cache from another TensorRT or GPU is refused; start afresh (the file is rewritten after the build)
    if not config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False):
        raise EdgeADError("TensorRT refused an empty timing cache")
