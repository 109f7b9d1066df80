"""TensorRT backend: deserialise the artifact's engine and run it on CUDA streams (TensorRT 10 name-based API).

Three layers, so that a stream scheduler can run several batches at once:
`TensorRTEngine` (runtime + engine + I/O description, one per model), `TensorRTSlot` (an execution context
with its own stream, pinned host and device buffers; `submit` enqueues, `wait` collects) and
`TensorRTBackend` (the ladder's backend: one slot, used synchronously). tensorrt and cuda-python are
imported only when one of these is created.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgead.artifact import Artifact
from edgead.errors import BackendError, DataError
from edgead.runtime import cuda
from edgead.runtime.backends.base import Backend

log = logging.getLogger("edgead.tensorrt")


def import_tensorrt() -> Any:
    return cuda.import_optional(("tensorrt",), "tensorrt")


def version_triple(version: str) -> tuple[int, int, int]:
    """(major, minor, patch) of a TensorRT version string such as '10.3.0.30' or '10.0.1'."""
    match = re.match(r"\s*(\d+)\.(\d+)(?:\.(\d+))?", str(version))
    if match is None:
        raise BackendError(f"cannot read TensorRT version {version!r}")
    return int(match[1]), int(match[2]), int(match[3] or 0)


def check_engine_compat(entry: dict[str, Any], trt_version: str, compute_capability: str) -> None:
    """Refuse an engine built by another TensorRT release or for another GPU architecture.

    Serialised engines are tied to the TensorRT release that built them; we compare major.minor.patch
    (a differing build number inside one patch release is left to TensorRT's own check at deserialisation,
    whose messages we report). `compute_capability` is like 'sm_87'.
    """
    member, precision = entry.get("member", "the TensorRT engine"), entry.get("precision", "fp16")
    rebuild = f"rebuild it here with `edgead export --engine {precision}`"
    built_version, built_cc = entry.get("tensorrt_version"), entry.get("compute_capability")
    if not built_version or not built_cc:
        raise BackendError(f"{member} does not record the TensorRT version and GPU it was built for; {rebuild}")
    if version_triple(built_version) != version_triple(trt_version) or built_cc != compute_capability:
        raise BackendError(
            f"{member} was built for TensorRT {built_version} on {built_cc}; "
            f"this device has TensorRT {trt_version} on {compute_capability} — {rebuild}"
        )


class LogCapture:
    """TensorRT's warnings and errors: sent to logging, and collected by `capture()` blocks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sinks: list[list[str]] = []

    def record(self, severity: str, message: str) -> None:
        (log.error if severity.endswith("error") else log.warning)("TensorRT %s: %s", severity, message)
        with self._lock:
            for sink in self._sinks:
                sink.append(f"{severity}: {message}")

    @contextmanager
    def capture(self) -> Iterator[list[str]]:
        """Yield a list that fills with the messages logged until the block ends."""
        sink: list[str] = []
        with self._lock:
            self._sinks.append(sink)
        try:
            yield sink
        finally:
            with self._lock:
                self._sinks = [s for s in self._sinks if s is not sink]


def describe_messages(messages: list[str], limit: int = 12) -> str:
    if not messages:
        return "TensorRT logged no warning or error"
    shown = messages[-limit:]
    return "TensorRT said:\n  " + "\n  ".join(shown) + (f"\n  (and {len(messages) - limit} earlier)" if len(messages) > limit else "")


_LOGGER: Any = None


def tensorrt_logger() -> Any:
    """The process-wide `CapturingLogger(trt.ILogger)`; one logger for every Builder and Runtime, as TensorRT expects."""
    global _LOGGER
    if _LOGGER is None:
        trt = import_tensorrt()
        kept = {
            trt.ILogger.Severity.INTERNAL_ERROR: "internal error",
            trt.ILogger.Severity.ERROR: "error",
            trt.ILogger.Severity.WARNING: "warning",
        }

        class CapturingLogger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)  # the binding's trampoline needs its base initialised explicitly
                self.records = LogCapture()

            def log(self, severity: Any, msg: str) -> None:
                name = kept.get(severity)
                if name is not None:
                    self.records.record(name, msg)

            def capture(self):
                return self.records.capture()

        _LOGGER = CapturingLogger()
    return _LOGGER


@dataclass(frozen=True)
class TensorSpec:
    """One engine I/O tensor: `shape` has -1 for the dynamic batch."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]


class TensorRTEngine:
    """A deserialised engine with one uint8 (N, H, W, 3) input and one float (N, C, h, w) output."""

    def __init__(self, data: bytes, name: str = "engine") -> None:
        self.trt = trt = import_tensorrt()
        self.name = name
        self.logger = tensorrt_logger()
        with self.logger.capture() as messages:
            self.runtime = trt.Runtime(self.logger)
            self.engine = self.runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise BackendError(f"TensorRT could not deserialise {name}; rebuild it on this device. {describe_messages(messages)}")
        inputs, outputs = [], []
        for index in range(self.engine.num_io_tensors):
            tensor = self.engine.get_tensor_name(index)
            spec = TensorSpec(tensor, self._numpy_dtype(tensor), tuple(self.engine.get_tensor_shape(tensor)))
            (inputs if self.engine.get_tensor_mode(tensor) == trt.TensorIOMode.INPUT else outputs).append(spec)
        if len(inputs) != 1 or len(outputs) != 1:
            raise BackendError(f"{name} has inputs {[s.name for s in inputs]} and outputs {[s.name for s in outputs]}; edgead engines have one of each")
        self.input, self.output = inputs[0], outputs[0]
        if self.input.dtype != np.uint8 or len(self.input.shape) != 4 or self.input.shape[3] != 3:
            raise BackendError(f"{name} takes {self.input.dtype} {self.input.shape}, not uint8 (N, H, W, 3); re-export it with this edgead")
        if self.input.shape[0] >= 0:  # a static batch
            self.batch_range = (self.input.shape[0],) * 3
        else:
            profile = self.engine.get_tensor_profile_shape(self.input.name, 0)  # [min, opt, max] shapes
            self.batch_range = tuple(int(tuple(shape)[0]) for shape in profile)

    @property
    def max_batch(self) -> int:
        return int(self.batch_range[2])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.input.shape[1:])

    def _numpy_dtype(self, tensor: str) -> np.dtype:
        dtype = self.engine.get_tensor_dtype(tensor)
        try:
            return np.dtype(self.trt.nptype(dtype))
        except TypeError:
            raise BackendError(f"{self.name}: tensor {tensor!r} has type {dtype}, which numpy cannot hold") from None

    def create_context(self) -> Any:
        with self.logger.capture() as messages:
            context = self.engine.create_execution_context()
        if context is None:
            raise BackendError(f"TensorRT could not create an execution context for {self.name}. {describe_messages(messages)}")
        return context

    def close(self) -> None:
        self.engine = None  # the engine goes before the runtime that made it
        self.runtime = None


class TensorRTSlot:
    """An execution context with its own stream and buffers for up to `max_batch` images.

    submit(images) enqueues copy-in, inference and copy-out and records an event without waiting;
    wait() blocks on that event and returns float32 (N, C, h, w). One batch in flight per slot.
    """

    def __init__(self, engine: TensorRTEngine, max_batch: int | None = None) -> None:
        self.engine = engine
        self.max_batch = min(engine.max_batch, max_batch or engine.max_batch)
        self.context: Any = None
        self.stream = self.host_in = self.host_out = self.device_in = self.device_out = None
        self.started = self.finished = None
        self._pending: tuple[int, tuple[int, ...]] | None = None
        self._closed = False
        try:
            self.context = engine.create_context()
            full = (self.max_batch, *engine.image_shape)
            self._set_input_shape(full)
            out_shape = tuple(int(d) for d in self.context.get_tensor_shape(engine.output.name))
            self.stream, self.started, self.finished = cuda.Stream(), cuda.Event(), cuda.Event()
            self.host_in = cuda.PinnedBuffer(full, np.uint8)
            self.host_out = cuda.PinnedBuffer(out_shape, engine.output.dtype)
            self.device_in = cuda.DeviceBuffer(self.host_in.nbytes)
            self.device_out = cuda.DeviceBuffer(self.host_out.nbytes)
        except BaseException as exc:
            self._release(pending=exc)
            raise
        self.item_shape = out_shape[1:]

    def _set_input_shape(self, shape: tuple[int, ...]) -> None:
        if not self.context.set_input_shape(self.engine.input.name, shape):
            low, _, high = self.engine.batch_range
            raise BackendError(f"{self.engine.name} refused input shape {shape}; its profile allows batches {low}..{high}")

    def submit(self, images: np.ndarray) -> None:
        """Enqueue inference on uint8 (n, H, W, 3) with n <= max_batch; returns at once."""
        if self._pending is not None:
            raise RuntimeError("this slot already has a batch in flight; wait() for it first")
        n = images.shape[0]
        if images.dtype != np.uint8 or not 0 < n <= self.max_batch or images.shape[1:] != self.engine.image_shape:
            raise DataError(f"a slot takes 1..{self.max_batch} uint8 images of {self.engine.image_shape}, not {images.dtype} {images.shape}")
        host_in = self.host_in.array[:n]
        np.copyto(host_in, images)  # staging in pinned memory lets the copy-in run asynchronously
        self._set_input_shape((n, *self.engine.image_shape))
        out_shape = tuple(int(d) for d in self.context.get_tensor_shape(self.engine.output.name))
        for spec, buffer in ((self.engine.input, self.device_in), (self.engine.output, self.device_out)):
            if not self.context.set_tensor_address(spec.name, buffer.ptr):
                raise BackendError(f"TensorRT refused the device address for tensor {spec.name!r}")
        self.started.record(self.stream)
        cuda.copy_htod_async(self.device_in.ptr, host_in, self.stream)
        with self.engine.logger.capture() as messages:
            ok = self.context.execute_async_v3(self.stream.handle)
        if not ok:
            self.stream.synchronize()  # let the copy-in finish before the caller reuses the buffers
            raise BackendError(f"TensorRT could not enqueue {self.engine.name}. {describe_messages(messages)}")
        cuda.copy_dtoh_async(self.host_out.array[:n], self.device_out.ptr, self.stream)
        self.finished.record(self.stream)
        self._pending = (n, out_shape)

    def ready(self) -> bool:
        """True when the submitted batch has finished (or nothing is in flight); never blocks."""
        return self._pending is None or self.finished.done()

    def wait(self) -> np.ndarray:
        """Block until the submitted batch is done; its features as float32 (n, C, h, w), a copy."""
        if self._pending is None:
            raise RuntimeError("nothing was submitted to this slot")
        n, out_shape = self._pending
        self._pending = None
        self.finished.synchronize()
        return self.host_out.array[:n].reshape(out_shape).astype(np.float32, copy=True)

    def gpu_ms(self) -> float:
        """GPU time of the last waited batch, copy-in to copy-out, in milliseconds."""
        return cuda.Event.elapsed_ms(self.started, self.finished)

    def _release(self, pending: BaseException | None = None) -> None:
        in_flight = self._pending is not None and self.stream is not None
        self._pending, self.context = None, None
        resources = [self.device_out, self.device_in, self.host_out, self.host_in, self.finished, self.started, self.stream]
        # closed in reverse: an unfinished batch is waited for before its buffers are freed
        cuda.close_all(resources + ([self.stream.synchronize] if in_flight else []), pending=pending)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._release()

    def __enter__(self) -> TensorRTSlot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _device_index(device: str) -> int:
    match = re.fullmatch(r"cuda(?::(\d+))?", device.strip())
    if match is None:
        raise BackendError(f"TensorRT runs on a CUDA GPU, not on {device!r}; pass --device cuda (or cuda:N)")
    return int(match[1] or 0)


class TensorRTBackend(Backend):
    """uint8 (N, H, W, 3) -> float32 (N, C, h, w) through a TensorRT engine, in chunks of the engine's max batch."""

    name = "tensorrt"

    def __init__(self, artifact: Artifact, engine: dict[str, Any], device: str) -> None:
        super().__init__(artifact, engine, device)
        trt = import_tensorrt()
        index = _device_index(device)
        count = cuda.device_count()
        if count == 0:
            raise BackendError("TensorRT needs a CUDA GPU and none is visible here; use --backend onnxruntime on this machine")
        if index >= count:
            raise BackendError(f"--device {device} asks for GPU {index}, but this machine has {count} (cuda:0..cuda:{count - 1})")
        cuda.set_device(index)
        major, minor = cuda.compute_capability(index)
        check_engine_compat(engine, trt.__version__, f"sm_{major}{minor}")
        self.trt_engine: TensorRTEngine | None = None
        self.slot: TensorRTSlot | None = None
        try:
            self.trt_engine = TensorRTEngine(artifact.member(engine["member"]), engine["member"])
            self.slot = TensorRTSlot(self.trt_engine)
        except BaseException as exc:
            cuda.close_all([self.trt_engine, self.slot], pending=exc)
            raise

    def infer(self, images: np.ndarray) -> np.ndarray:
        images = np.ascontiguousarray(images, dtype=np.uint8)
        shape = self.trt_engine.image_shape
        if images.ndim != 4 or images.shape[1:] != shape:
            raise DataError(f"TensorRT engine {self.engine['member']} takes (N, {', '.join(map(str, shape))}) images, not {images.shape}")
        if images.shape[0] == 0:
            return np.empty((0, *self.slot.item_shape), np.float32)
        chunks = []
        for start in range(0, images.shape[0], self.slot.max_batch):
            self.slot.submit(images[start : start + self.slot.max_batch])
            chunks.append(self.slot.wait())
        return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)

    def create_slot(self, max_batch: int) -> TensorRTSlot:
        """Another slot (its own execution context, stream, pinned and device buffers) for the patch scheduler."""
        return TensorRTSlot(self.trt_engine, min(max_batch, self.trt_engine.max_batch))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            slot, engine, self.slot, self.trt_engine = self.slot, self.trt_engine, None, None
            cuda.close_all([engine, slot])  # slot (its context) first, then the engine
        super().close()
