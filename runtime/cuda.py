"""The CUDA layer on cuda-python: checked runtime calls, device and pinned buffers, streams, events, copies.

cuda-python is imported on first use, from its current layout (`cuda.bindings.runtime`) or the older one
(`cuda.cudart`), so importing this module needs neither the package nor a GPU. Every cudart call returns a
tuple `(error, *values)`; `check` turns a non-zero error into a `CudaError` naming the call and the error.
"""

from __future__ import annotations

import ctypes
import importlib
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np

from edgead.errors import BackendError, DependencyError

INSTALL_HINT = "pip install 'edgead[tensorrt]' (on a Jetson, TensorRT and cuda-python come with JetPack)"
_NO_DEVICE = 100  # cudaErrorNoDevice: the driver works but sees no GPU
_INSUFFICIENT_DRIVER = 35  # cudaErrorInsufficientDriver: no driver at all (version 0), or one older than the runtime

_cudart: Any = None


class CudaError(BackendError):
    """A CUDA runtime call that returned an error code."""

    def __init__(self, message: str, call: str = "", code: int = -1, error_name: str = "") -> None:
        super().__init__(message)
        self.call, self.code, self.error_name = call, code, error_name


def import_optional(names: tuple[str, ...], package: str) -> Any:
    """The first of `names` that imports; DependencyError with the install hint when none does."""
    failure: BaseException | None = None
    for name in names:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        except (ImportError, OSError, RuntimeError) as exc:  # installed, but a native library would not load
            failure = failure or exc
    if failure is not None:
        raise DependencyError(f"{package} is installed but could not be loaded ({failure}); reinstall it: {INSTALL_HINT}") from failure
    raise DependencyError(f"{package} is not installed: {INSTALL_HINT}")


def cudart() -> Any:
    """The cuda-python runtime module, new layout (cuda.bindings.runtime) or old (cuda.cudart)."""
    global _cudart
    if _cudart is None:
        _cudart = import_optional(("cuda.bindings.runtime", "cuda.cudart"), "cuda-python")
    return _cudart


def _code(err: Any) -> int:
    return int(getattr(err, "value", err))  # cudaError_t is an enum; plain ints work too


def _describe(err: Any) -> tuple[str, str]:
    """(name, explanation) of a CUDA error, from cudaGetErrorName / cudaGetErrorString."""
    texts = []
    for getter in ("cudaGetErrorName", "cudaGetErrorString"):
        try:
            text = getattr(cudart(), getter)(err)[1]
            texts.append(text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text))
        except Exception:  # describing must never hide the error being described
            texts.append(str(getattr(err, "name", f"error {_code(err)}")))
    return texts[0], texts[1]


def check(result: tuple, call: str = "CUDA call") -> Any:
    """Values of a cudart result tuple `(err, *values)`: None, the single value, or a tuple; CudaError on failure."""
    err, *values = result
    code = _code(err)
    if code != 0:
        name, text = _describe(err)
        raise CudaError(f"{call} failed with {name} ({code}): {text}", call=call, code=code, error_name=name)
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def _note(exc: BaseException, message: str) -> None:
    if hasattr(exc, "add_note"):  # Python 3.11+
        exc.add_note(message)
    else:
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def close_all(resources: Iterable[Any], pending: BaseException | None = None) -> None:
    """Close resources (objects with close(), or callables) in reverse order, every one even if some fail.

    The first cleanup error is raised once all are closed. With `pending` (the error that made us clean up),
    cleanup errors become notes on it instead, so they never mask the original failure.
    """
    first: BaseException | None = None
    for resource in reversed(list(resources)):
        if resource is None:
            continue
        try:
            resource.close() if hasattr(resource, "close") else resource()
        except Exception as exc:
            target = pending if pending is not None else first
            if target is None:
                first = exc
            else:
                _note(target, f"cleanup also failed: {type(exc).__name__}: {exc}")
    if first is not None:
        raise first


def device_count() -> int:
    """Number of CUDA GPUs visible to this process: 0 when the driver sees none or no CUDA driver is installed.

    A driver older than cuda-python's CUDA runtime is a CudaError that says which cuda-python to install.
    """
    rt = cudart()
    try:
        result = rt.cudaGetDeviceCount()
    except RuntimeError as exc:  # some cuda-python releases raise when libcuda cannot be loaded
        raise CudaError(f"cudaGetDeviceCount could not reach the CUDA driver: {exc}", call="cudaGetDeviceCount") from exc
    code = _code(result[0])
    if code == _NO_DEVICE:
        return 0
    if code == _INSUFFICIENT_DRIVER:
        driver = _version(rt, "cudaDriverGetVersion")
        if driver == 0:  # cudart reports driver version 0 when there is no libcuda: a machine without a GPU driver
            return 0
        runtime = _version(rt, "cudaRuntimeGetVersion")
        if driver is not None and runtime is not None:
            major, minor = driver // 1000, driver % 1000 // 10
            raise CudaError(
                f"the CUDA driver here runs CUDA {_cuda_text(driver)}, older than the CUDA {_cuda_text(runtime)} runtime of the "
                f"installed cuda-python; install the cuda-python of the driver's CUDA: pip install 'cuda-python>={major}.{minor},<{major}.{minor + 1}' "
                "(on a Jetson, jetson/setup.sh picks it from JetPack)",
                call="cudaGetDeviceCount", code=code, error_name="cudaErrorInsufficientDriver",
            )
    return int(check(result, "cudaGetDeviceCount"))


def _version(rt: Any, getter: str) -> int | None:
    """cudaDriverGetVersion / cudaRuntimeGetVersion as an int like 12060, or None when it cannot be read."""
    try:
        return int(check(getattr(rt, getter)(), getter))
    except (CudaError, RuntimeError, AttributeError, TypeError, ValueError):
        return None


def _cuda_text(version: int) -> str:
    return f"{version // 1000}.{version % 1000 // 10}"


def set_device(device: int) -> None:
    check(cudart().cudaSetDevice(int(device)), f"cudaSetDevice({device})")


def compute_capability(device: int = 0) -> tuple[int, int]:
    """(major, minor) compute capability of a GPU, e.g. (8, 7) on a Jetson Orin."""
    rt = cudart()
    attrs = rt.cudaDeviceAttr
    major = check(rt.cudaDeviceGetAttribute(attrs.cudaDevAttrComputeCapabilityMajor, device), "cudaDeviceGetAttribute")
    minor = check(rt.cudaDeviceGetAttribute(attrs.cudaDevAttrComputeCapabilityMinor, device), "cudaDeviceGetAttribute")
    return int(major), int(minor)


class _Resource:
    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DeviceBuffer(_Resource):
    """`nbytes` of GPU memory at integer address `.ptr` (cudaMalloc / cudaFree)."""

    def __init__(self, nbytes: int) -> None:
        if int(nbytes) <= 0:
            raise ValueError(f"a device buffer needs a positive size, not {nbytes} bytes")
        self.nbytes = int(nbytes)
        self.ptr = 0
        self.ptr = int(check(cudart().cudaMalloc(self.nbytes), f"cudaMalloc({self.nbytes})"))

    def close(self) -> None:
        ptr, self.ptr = self.ptr, 0
        if ptr:
            check(cudart().cudaFree(ptr), "cudaFree")


class PinnedBuffer(_Resource):
    """Page-locked host memory seen as a numpy array `.array` of `shape` and `dtype` (cudaMallocHost).

    `.array` is a view on memory this object frees: do not keep it past close().
    """

    def __init__(self, shape: tuple[int, ...], dtype: Any) -> None:
        self.shape, self.dtype = tuple(int(s) for s in shape), np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        if self.nbytes <= 0:
            raise ValueError(f"a pinned buffer needs a positive size, not shape {self.shape}")
        self.ptr = 0
        self.array: np.ndarray | None = None
        self.ptr = int(check(cudart().cudaMallocHost(self.nbytes), f"cudaMallocHost({self.nbytes})"))
        raw = (ctypes.c_ubyte * self.nbytes).from_address(self.ptr)  # no copy: ctypes wraps the address
        self.array = np.frombuffer(raw, dtype=self.dtype).reshape(self.shape)

    def close(self) -> None:
        ptr, self.ptr, self.array = self.ptr, 0, None
        if ptr:
            check(cudart().cudaFreeHost(ptr), "cudaFreeHost")


class Stream(_Resource):
    """A non-blocking CUDA stream; `.handle` is the integer TensorRT's execute_async_v3 takes."""

    def __init__(self) -> None:
        rt = cudart()
        self.raw: Any = None
        self.raw = check(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking), "cudaStreamCreateWithFlags")

    @property
    def handle(self) -> int:
        if self.raw is None:
            raise RuntimeError("the CUDA stream is closed")
        return int(self.raw)

    def synchronize(self) -> None:
        check(cudart().cudaStreamSynchronize(self.raw), "cudaStreamSynchronize")

    def close(self) -> None:
        raw, self.raw = self.raw, None
        if raw is not None:
            check(cudart().cudaStreamDestroy(raw), "cudaStreamDestroy")


class Event(_Resource):
    """A CUDA event, for ordering (record / synchronize / done) and GPU timing (elapsed_ms)."""

    def __init__(self) -> None:
        self.raw: Any = None
        self.raw = check(cudart().cudaEventCreate(), "cudaEventCreate")  # default flags keep timing on

    def record(self, stream: Stream) -> None:
        check(cudart().cudaEventRecord(self.raw, stream.raw), "cudaEventRecord")

    def synchronize(self) -> None:
        check(cudart().cudaEventSynchronize(self.raw), "cudaEventSynchronize")

    def done(self) -> bool:
        """True once all work before the last record() has finished; never blocks."""
        result = cudart().cudaEventQuery(self.raw)
        if _code(result[0]) == _code(cudart().cudaError_t.cudaErrorNotReady):
            return False
        check(result, "cudaEventQuery")
        return True

    @staticmethod
    def elapsed_ms(start: Event, end: Event) -> float:
        """GPU time between two recorded, completed events, in milliseconds."""
        return float(check(cudart().cudaEventElapsedTime(start.raw, end.raw), "cudaEventElapsedTime"))

    def close(self) -> None:
        raw, self.raw = self.raw, None
        if raw is not None:
            check(cudart().cudaEventDestroy(raw), "cudaEventDestroy")


def _contiguous(array: np.ndarray, writable: bool) -> np.ndarray:
    if not array.flags.c_contiguous or (writable and not array.flags.writeable):
        raise ValueError("host arrays for CUDA copies must be C-contiguous" + (" and writable" if writable else ""))
    return array


def copy_htod_async(dst_ptr: int, host_array: np.ndarray, stream: Stream) -> None:
    """Enqueue host -> device of all of `host_array` (pinned for a truly asynchronous copy)."""
    rt, src = cudart(), _contiguous(host_array, writable=False)
    kind = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
    check(rt.cudaMemcpyAsync(dst_ptr, src.ctypes.data, src.nbytes, kind, stream.raw), "cudaMemcpyAsync(host->device)")


def copy_dtoh_async(host_array: np.ndarray, src_ptr: int, stream: Stream) -> None:
    """Enqueue device -> host filling all of `host_array`; read it only after the stream or an event is synchronised."""
    rt, dst = cudart(), _contiguous(host_array, writable=True)
    kind = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
    check(rt.cudaMemcpyAsync(dst.ctypes.data, src_ptr, dst.nbytes, kind, stream.raw), "cudaMemcpyAsync(device->host)")


def copy_dtod(dst_ptr: int, src_ptr: int, nbytes: int, stream: Stream | None = None) -> None:
    """Device -> device copy of `nbytes`: enqueued on `stream`, or synchronous without one."""
    rt = cudart()
    kind = rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice
    if stream is None:
        check(rt.cudaMemcpy(dst_ptr, src_ptr, nbytes, kind), "cudaMemcpy(device->device)")
    else:
        check(rt.cudaMemcpyAsync(dst_ptr, src_ptr, nbytes, kind, stream.raw), "cudaMemcpyAsync(device->device)")
