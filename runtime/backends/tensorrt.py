"""TensorRT backend: deserialise the artifact's engine and run it on CUDA streams (name-based API of TensorRT 10 and 11).

Three layers, so that a stream scheduler can run several batches at once:
`TensorRTEngine` (runtime + engine + I/O description, one per model), `TensorRTSlot` (an execution context
with its own stream, pinned host and device buffers; `submit` enqueues, `wait` collects) and
`TensorRTBackend` (the ladder's backend: one slot, used synchronously). An engine has any number of named
inputs and outputs of any dtype numpy holds (uint8 images, int64 codes, float16/float32 tensors), all
with the batch first; names, shapes and dtypes come from the engine itself. One output comes back as an
array, several as a tuple in the engine's order. tensorrt and cuda-python are imported only when one of
these is created.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgead.artifact import Artifact
from edgead.errors import BackendError, BackendUnavailable, DataError
from edgead.runtime import cuda
from edgead.runtime.backends.base import Backend
from edgead.runtime.backends.tensorrt_common import (  # noqa: F401  (re-exported: the builder and tests use them here)
    LogCapture,
    check_engine_compat,
    create_native,
    describe_messages,
    import_tensorrt,
    tensorrt_logger,
    tensorrt_major,
    version_triple,
)
from edgead.runtime.scheduler import stage
from edgead.runtime.tiling import Patches

@dataclass(frozen=True)
class TensorSpec:
    """One engine I/O tensor: `shape` has -1 for the dynamic batch (axis 0)."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def item_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.shape[1:])


class TensorRTEngine:
    """A deserialised engine: its inputs and outputs (engine order) and the batch range of its profile."""

    def __init__(self, data: bytes, name: str = "engine") -> None:
        self.trt = trt = import_tensorrt()
        self.name = name
        self.logger = tensorrt_logger()
        with self.logger.capture() as messages:
            self.runtime = create_native(lambda: trt.Runtime(self.logger), "its runtime", messages)
            if hasattr(self.runtime, "engine_host_code_allowed"):
                self.runtime.engine_host_code_allowed = False  # an engine's embedded host code (lean runtime, plugins) would run on load
            self.engine = self.runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise BackendError(f"TensorRT could not deserialise {name}; rebuild it on this device. {describe_messages(messages)}")
        inputs, outputs = [], []
        for index in range(self.engine.num_io_tensors):
            tensor = self.engine.get_tensor_name(index)
            spec = TensorSpec(tensor, self._numpy_dtype(tensor), tuple(int(d) for d in self.engine.get_tensor_shape(tensor)))
            (inputs if self.engine.get_tensor_mode(tensor) == trt.TensorIOMode.INPUT else outputs).append(spec)
        if not inputs or not outputs:
            raise BackendError(f"{name} has inputs {[s.name for s in inputs]} and outputs {[s.name for s in outputs]}; it needs at least one of each")
        for spec in inputs:
            if not spec.shape or any(d < 0 for d in spec.shape[1:]):
                raise BackendError(f"{name}: input {spec.name!r} has shape {spec.shape}; edgead engines have a batch axis first and fixed other axes")
        self.inputs, self.outputs = tuple(inputs), tuple(outputs)
        first = self.inputs[0]
        if first.shape[0] >= 0:  # a static batch
            self.batch_range = (first.shape[0],) * 3
        else:
            profile = self.engine.get_tensor_profile_shape(first.name, 0)  # [min, opt, max] shapes
            self.batch_range = tuple(int(tuple(shape)[0]) for shape in profile)

    @property
    def input(self) -> TensorSpec:
        return self.inputs[0]

    @property
    def max_batch(self) -> int:
        return int(self.batch_range[2])

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Shape of one item of the first input: (H, W, 3) for an image graph."""
        return self.inputs[0].item_shape

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


def _as_inputs(engine: TensorRTEngine, arrays: Sequence[Any]) -> list[np.ndarray]:
    """Positional arrays in the engine's input order, or one mapping by input name -> checked contiguous arrays."""
    if len(arrays) == 1 and isinstance(arrays[0], Mapping):
        given = arrays[0]
        missing = [s.name for s in engine.inputs if s.name not in given]
        if missing or len(given) != len(engine.inputs):
            raise DataError(f"{engine.name} takes inputs {[s.name for s in engine.inputs]}, not {sorted(given)}")
        arrays = [given[s.name] for s in engine.inputs]
    if len(arrays) != len(engine.inputs):
        raise DataError(f"{engine.name} takes {len(engine.inputs)} inputs ({', '.join(s.name for s in engine.inputs)}), not {len(arrays)}")
    checked = []
    for spec, array in zip(engine.inputs, arrays):
        lazy = isinstance(array, Patches)  # patches cut from frames: copied once, straight into pinned memory
        array = array if lazy else np.asarray(array)
        if array.ndim != len(spec.shape) or array.shape[1:] != spec.item_shape:
            raise DataError(f"{engine.name}: input {spec.name!r} takes (N, {', '.join(map(str, spec.item_shape))}), not {array.shape}")
        if array.dtype != spec.dtype and not np.can_cast(array.dtype, spec.dtype, casting="same_kind"):
            raise DataError(f"{engine.name}: input {spec.name!r} takes {spec.dtype}, not {array.dtype}")
        checked.append(array if lazy and array.dtype == spec.dtype else np.ascontiguousarray(array, dtype=spec.dtype))
    if len({a.shape[0] for a in checked}) != 1:
        raise DataError(f"{engine.name}: the inputs have different batch sizes {[a.shape[0] for a in checked]}")
    return checked


def _host_dtype(dtype: np.dtype) -> np.dtype:
    """What an output is handed back as: float32 for any floating-point tensor (the heads score in FP32)."""
    return np.dtype(np.float32) if np.issubdtype(dtype, np.floating) else np.dtype(dtype)


def _result(arrays: list[np.ndarray]) -> np.ndarray | tuple[np.ndarray, ...]:
    return arrays[0] if len(arrays) == 1 else tuple(arrays)


class TensorRTSlot:
    """An execution context with its own stream and buffers for up to `max_batch` items of every input.

    submit(*inputs) enqueues copy-in, inference and copy-out and records an event without waiting;
    wait() blocks on that event and returns the outputs (an array, or a tuple for several). Floating-point
    outputs come back as float32, others in their own dtype. One batch in flight per slot.
    """

    def __init__(self, engine: TensorRTEngine, max_batch: int | None = None) -> None:
        self.engine = engine
        self.max_batch = min(engine.max_batch, max_batch or engine.max_batch)
        self.context: Any = None
        self.stream = self.started = self.finished = None
        self.host: dict[str, Any] = {}
        self.device: dict[str, Any] = {}
        self._pending: tuple[int, list[tuple[int, ...]]] | None = None
        self._closed = False
        try:
            self.context = engine.create_context()
            self._set_input_shapes(self.max_batch)
            self.stream, self.started, self.finished = cuda.Stream(), cuda.Event(), cuda.Event()
            for spec in [*engine.inputs, *engine.outputs]:
                shape = self._shape(spec)
                self.host[spec.name] = cuda.PinnedBuffer(shape, spec.dtype)
                self.device[spec.name] = cuda.DeviceBuffer(self.host[spec.name].nbytes)
        except BaseException as exc:
            self._release(pending=exc)
            raise
        self.output_item_shapes = [self._shape(spec)[1:] for spec in engine.outputs]
        self.item_shape = self.output_item_shapes[0]

    def _shape(self, spec: TensorSpec) -> tuple[int, ...]:
        return tuple(int(d) for d in self.context.get_tensor_shape(spec.name))

    def _set_input_shapes(self, batch: int) -> None:
        for spec in self.engine.inputs:
            shape = (batch, *spec.item_shape)
            if not self.context.set_input_shape(spec.name, shape):
                low, _, high = self.engine.batch_range
                raise BackendError(f"{self.engine.name} refused input shape {shape} for {spec.name!r}; its profile allows batches {low}..{high}")

    def submit(self, *inputs: Any) -> None:
        """Enqueue inference on a batch of n <= max_batch items (arrays in input order, or a dict by name); returns at once."""
        if self._pending is not None:
            raise RuntimeError("this slot already has a batch in flight; wait() for it first")
        arrays = _as_inputs(self.engine, inputs)
        n = arrays[0].shape[0]
        if not 0 < n <= self.max_batch:
            raise DataError(f"a slot takes batches of 1..{self.max_batch}, not {n}")
        staged = []
        for spec, array in zip(self.engine.inputs, arrays):
            host = stage(array, self.host[spec.name].array)  # staging in pinned memory lets the copy-in run asynchronously
            staged.append((spec, host))
        self._set_input_shapes(n)
        out_shapes = [self._shape(spec) for spec in self.engine.outputs]
        for spec in [*self.engine.inputs, *self.engine.outputs]:
            if not self.context.set_tensor_address(spec.name, self.device[spec.name].ptr):
                raise BackendError(f"TensorRT refused the device address for tensor {spec.name!r}")
        self.started.record(self.stream)
        for spec, host in staged:
            cuda.copy_htod_async(self.device[spec.name].ptr, host, self.stream)
        with self.engine.logger.capture() as messages:
            ok = self.context.execute_async_v3(self.stream.handle)
        if not ok:
            self.stream.synchronize()  # let the copy-in finish before the caller reuses the buffers
            raise BackendError(f"TensorRT could not enqueue {self.engine.name}. {describe_messages(messages)}")
        for spec, shape in zip(self.engine.outputs, out_shapes):
            count = int(np.prod(shape, dtype=np.int64))
            cuda.copy_dtoh_async(self.host[spec.name].array.reshape(-1)[:count], self.device[spec.name].ptr, self.stream)
        self.finished.record(self.stream)
        self._pending = (n, out_shapes)

    def ready(self) -> bool:
        """True when the submitted batch has finished (or nothing is in flight); never blocks."""
        return self._pending is None or self.finished.done()

    def wait(self) -> np.ndarray | tuple[np.ndarray, ...]:
        """Block until the submitted batch is done; its outputs as copies (float32 for floating-point ones)."""
        if self._pending is None:
            raise RuntimeError("nothing was submitted to this slot")
        n, out_shapes = self._pending
        self._pending = None
        self.finished.synchronize()
        results = []
        for spec, shape in zip(self.engine.outputs, out_shapes):
            count = int(np.prod(shape, dtype=np.int64))
            flat = self.host[spec.name].array.reshape(-1)[:count]
            results.append(flat.reshape(shape).astype(_host_dtype(spec.dtype), copy=True))
        return _result(results)

    def gpu_ms(self) -> float:
        """GPU time of the last waited batch, copy-in to copy-out, in milliseconds."""
        return cuda.Event.elapsed_ms(self.started, self.finished)

    def _release(self, pending: BaseException | None = None) -> None:
        in_flight = self._pending is not None and self.stream is not None
        self._pending, self.context = None, None
        buffers = [b for name in self.host for b in (self.device.get(name), self.host.get(name))]
        resources = [*buffers, self.finished, self.started, self.stream]
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
    """The artifact's engine on one CUDA slot: uint8 (N, H, W, 3) -> float32 (N, C, h, w) for the feature graph."""

    name = "tensorrt"

    def __init__(self, artifact: Artifact, engine: dict[str, Any], device: str) -> None:
        super().__init__(artifact, engine, device)
        trt = import_tensorrt()
        index = _device_index(device)
        count = cuda.device_count()
        if count == 0:
            raise BackendUnavailable("TensorRT needs a CUDA GPU and none is visible here; use --backend onnxruntime on this machine")
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

    def infer(self, *inputs: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        """A batch of any size (arrays in input order, or a dict by name), in chunks of the engine's max batch.

        One output: an array (float32 for floating-point outputs); several: a tuple in the engine's order.
        """
        arrays = _as_inputs(self.trt_engine, inputs)
        n = arrays[0].shape[0]
        if n == 0:
            specs = zip(self.trt_engine.outputs, self.slot.output_item_shapes)
            return _result([np.empty((0, *shape), _host_dtype(spec.dtype)) for spec, shape in specs])
        chunks = []
        for start in range(0, n, self.slot.max_batch):
            self.slot.submit(*[a[start : start + self.slot.max_batch] for a in arrays])
            got = self.slot.wait()
            chunks.append(got if isinstance(got, tuple) else (got,))
        if len(chunks) == 1:
            return _result(list(chunks[0]))
        return _result([np.concatenate(parts) for parts in zip(*chunks)])

    def create_slot(self, max_batch: int) -> TensorRTSlot:
        """Another slot (its own execution context, stream, pinned and device buffers) for the patch scheduler."""
        return TensorRTSlot(self.trt_engine, min(max_batch, self.trt_engine.max_batch))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            slot, engine, self.slot, self.trt_engine = self.slot, self.trt_engine, None, None
            cuda.close_all([engine, slot])  # slot (its context) first, then the engine
        super().close()
