"""The CUDA layer: error checking and resource handling against a fake cudart; real copies where a GPU is."""

import ctypes
import enum
import sys
import types

import numpy as np
import pytest

from edgead.errors import BackendError, DependencyError, EdgeADError
from edgead.runtime import cuda


class FakeError(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100
    cudaErrorNotReady = 600


class FakeCudart:
    """Records every call; `results[name]` gives the values a call returns, `errors[name]` its error code."""

    cudaError_t = FakeError
    cudaStreamNonBlocking = 1

    class cudaMemcpyKind:
        cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice = 1, 2, 3

    class cudaDeviceAttr:
        cudaDevAttrComputeCapabilityMajor, cudaDevAttrComputeCapabilityMinor = 75, 76

    def __init__(self):
        self.calls, self.results, self.errors = [], {}, {}

    def cudaGetErrorName(self, err):
        return FakeError.cudaSuccess, FakeError(int(err)).name.encode()

    def cudaGetErrorString(self, err):
        return FakeError.cudaSuccess, b"out of memory"

    def __getattr__(self, name):
        if not name.startswith("cuda"):
            raise AttributeError(name)

        def call(*args):
            self.calls.append((name, args))
            return (self.errors.get(name, FakeError.cudaSuccess), *self.results.get(name, ()))

        return call

    def names(self):
        return [name for name, _ in self.calls]


@pytest.fixture
def fake(monkeypatch):
    fake = FakeCudart()
    monkeypatch.setattr(cuda, "_cudart", fake)
    return fake


def test_check_returns_none_one_value_or_a_tuple(fake):
    assert cuda.check((FakeError.cudaSuccess,)) is None
    assert cuda.check((FakeError.cudaSuccess, 5)) == 5
    assert cuda.check((0, 1, 2)) == (1, 2)


def test_check_raises_naming_the_error_and_the_call(fake):
    with pytest.raises(cuda.CudaError, match=r"cudaMalloc\(64\) failed with cudaErrorMemoryAllocation \(2\): out of memory") as info:
        cuda.check((FakeError.cudaErrorMemoryAllocation, 0), "cudaMalloc(64)")
    assert isinstance(info.value, BackendError)
    assert (info.value.code, info.value.error_name, info.value.call) == (2, "cudaErrorMemoryAllocation", "cudaMalloc(64)")


def test_check_still_names_the_error_when_describing_it_fails(fake, monkeypatch):
    def broken(err):
        raise RuntimeError("driver gone")

    monkeypatch.setattr(FakeCudart, "cudaGetErrorName", lambda self, err: broken(err))
    with pytest.raises(cuda.CudaError, match="cudaErrorMemoryAllocation"):
        cuda.check((FakeError.cudaErrorMemoryAllocation,), "cudaFree")


def test_missing_cuda_python_asks_for_the_extra(monkeypatch):
    monkeypatch.setattr(cuda, "_cudart", None)
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)
    for use in (cuda.cudart, cuda.device_count, lambda: cuda.DeviceBuffer(16)):
        with pytest.raises(DependencyError, match=r"pip install 'edgead\[tensorrt\]'.*JetPack"):
            use()


def test_installed_but_unloadable_package_is_a_dependency_error(monkeypatch):
    def broken(name):
        raise OSError("libcudart.so.12: cannot open shared object file")

    monkeypatch.setattr(cuda.importlib, "import_module", broken)
    with pytest.raises(DependencyError, match="installed but could not be loaded .*libcudart"):
        cuda.import_optional(("cuda.bindings.runtime",), "cuda-python")


def test_a_driver_that_cannot_load_is_a_cuda_error(fake, monkeypatch):
    def no_driver(self):
        raise RuntimeError("Failed to dlopen libcuda.so.1")

    monkeypatch.setattr(FakeCudart, "cudaGetDeviceCount", no_driver, raising=False)
    with pytest.raises(cuda.CudaError, match="could not reach the CUDA driver"):
        cuda.device_count()


def test_device_queries(fake):
    fake.errors["cudaGetDeviceCount"] = FakeError.cudaErrorNoDevice
    assert cuda.device_count() == 0
    fake.errors.clear()
    fake.results["cudaGetDeviceCount"] = (2,)
    assert cuda.device_count() == 2
    fake.results["cudaDeviceGetAttribute"] = (8,)
    assert cuda.compute_capability(1) == (8, 8)
    assert ("cudaDeviceGetAttribute", (75, 1)) in fake.calls and ("cudaDeviceGetAttribute", (76, 1)) in fake.calls


def test_no_driver_means_no_gpu(fake):
    # measured with cuda-bindings 12.9.4 and 13.0.0 on a machine without libcuda: (35, None), driver version 0
    fake.errors["cudaGetDeviceCount"] = FakeError.cudaErrorInsufficientDriver
    fake.results["cudaDriverGetVersion"] = (0,)
    assert cuda.device_count() == 0


def test_a_driver_older_than_the_runtime_says_which_cuda_python_to_install(fake):
    fake.errors["cudaGetDeviceCount"] = FakeError.cudaErrorInsufficientDriver
    fake.results["cudaDriverGetVersion"] = (12060,)  # JetPack 6.1 / 6.2
    fake.results["cudaRuntimeGetVersion"] = (13000,)  # cuda-python 13
    with pytest.raises(cuda.CudaError, match=r"runs CUDA 12\.6, older than the CUDA 13\.0 runtime .*'cuda-python>=12\.6,<12\.7'.*jetson/setup\.sh") as info:
        cuda.device_count()
    assert info.value.code == 35


def test_an_unreadable_driver_version_keeps_the_cuda_error(fake):
    fake.errors["cudaGetDeviceCount"] = FakeError.cudaErrorInsufficientDriver
    fake.errors["cudaDriverGetVersion"] = FakeError.cudaErrorInsufficientDriver
    with pytest.raises(cuda.CudaError, match=r"cudaGetDeviceCount failed with cudaErrorInsufficientDriver \(35\)"):
        cuda.device_count()


def test_without_a_driver_tensorrt_says_it_needs_a_gpu(fake, monkeypatch):
    """build_engine and TensorRTBackend give their own message, not cudart's error 35."""
    from edgead.artifact import Artifact
    from edgead.export.tensorrt import build_engine
    from edgead.runtime.backends.tensorrt import TensorRTBackend

    fake.errors["cudaGetDeviceCount"] = FakeError.cudaErrorInsufficientDriver
    fake.results["cudaDriverGetVersion"] = (0,)
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.3.0"))
    with pytest.raises(BackendError, match="building a TensorRT engine needs a CUDA GPU and none is visible"):
        build_engine(b"onnx", "fp16", (32, 32))
    entry = {"backend": "tensorrt", "precision": "fp16", "member": "engines/features.fp16.plan"}
    with pytest.raises(BackendError, match="TensorRT needs a CUDA GPU and none is visible here; use --backend onnxruntime"):
        TensorRTBackend(Artifact(None, {"engines": [entry]}, {entry["member"]: b"plan"}), entry, "cuda")


def test_device_buffer_frees_once_and_reports_a_failed_free(fake):
    fake.results["cudaMalloc"] = (4096,)
    with cuda.DeviceBuffer(64) as buffer:
        assert (buffer.ptr, buffer.nbytes) == (4096, 64)
    buffer.close()
    assert fake.calls == [("cudaMalloc", (64,)), ("cudaFree", (4096,))]
    failing = cuda.DeviceBuffer(64)
    fake.errors["cudaFree"] = FakeError.cudaErrorMemoryAllocation
    with pytest.raises(cuda.CudaError, match="cudaFree"):
        failing.close()
    failing.close()  # already released: nothing more to report
    assert fake.names().count("cudaFree") == 2


def test_failed_allocation_raises_and_leaves_nothing_to_free(fake):
    fake.errors["cudaMalloc"] = FakeError.cudaErrorMemoryAllocation
    with pytest.raises(cuda.CudaError, match="cudaMalloc"):
        cuda.DeviceBuffer(1 << 40)
    assert "cudaFree" not in fake.names()


def test_pinned_buffer_is_a_numpy_view_on_the_host_memory(fake):
    memory = ctypes.create_string_buffer(2 * 3 * 2)  # stands in for cudaMallocHost's allocation
    fake.results["cudaMallocHost"] = (ctypes.addressof(memory),)
    buffer = cuda.PinnedBuffer((2, 3), np.float16)
    assert buffer.array.shape == (2, 3) and buffer.array.dtype == np.float16 and buffer.nbytes == 12
    buffer.array[:] = np.arange(6, dtype=np.float16).reshape(2, 3)
    assert np.array_equal(np.frombuffer(memory.raw, np.float16), np.arange(6, dtype=np.float16))
    with buffer:
        pass
    buffer.close()
    assert buffer.array is None and fake.names().count("cudaFreeHost") == 1
    with pytest.raises(ValueError):
        cuda.PinnedBuffer((0, 3), np.uint8)


def test_stream_and_event(fake):
    fake.results.update(cudaStreamCreateWithFlags=(77,), cudaEventCreate=(5,), cudaEventElapsedTime=(1.5,))
    stream = cuda.Stream()
    assert stream.handle == 77 and ("cudaStreamCreateWithFlags", (1,)) in fake.calls
    event = cuda.Event()
    event.record(stream)
    assert ("cudaEventRecord", (5, 77)) in fake.calls
    assert event.done()
    fake.errors["cudaEventQuery"] = FakeError.cudaErrorNotReady
    assert not event.done()
    assert cuda.Event.elapsed_ms(event, event) == 1.5
    stream.synchronize()
    for resource in (event, stream, event, stream):
        resource.close()
    assert fake.names().count("cudaStreamDestroy") == 1 and fake.names().count("cudaEventDestroy") == 1
    with pytest.raises(RuntimeError, match="closed"):
        stream.handle


def test_copies_pass_sizes_kinds_and_the_stream(fake):
    fake.results["cudaStreamCreateWithFlags"] = (9,)
    stream = cuda.Stream()
    host = np.zeros((4, 8), np.float32)
    cuda.copy_htod_async(1000, host, stream)
    cuda.copy_dtoh_async(host, 2000, stream)
    cuda.copy_dtod(3000, 1000, 64, stream)
    cuda.copy_dtod(3000, 1000, 64)
    copies = [args for name, args in fake.calls if name.startswith("cudaMemcpy")]
    assert copies == [
        (1000, host.ctypes.data, 128, 1, 9),
        (host.ctypes.data, 2000, 128, 2, 9),
        (3000, 1000, 64, 3, 9),
        (3000, 1000, 64, 3),
    ]
    with pytest.raises(ValueError, match="contiguous"):
        cuda.copy_htod_async(1000, host[:, ::2], stream)


class Closable:
    def __init__(self, log, name, error=None):
        self.log, self.name, self.error = log, name, error

    def close(self):
        self.log.append(self.name)
        if self.error:
            raise self.error


def test_close_all_closes_everything_then_raises_the_first_error():
    log = []
    resources = [Closable(log, "a"), Closable(log, "b", cuda.CudaError("b failed")), None, Closable(log, "c", OSError("c failed"))]
    with pytest.raises(OSError, match="c failed"):
        cuda.close_all(resources + [lambda: log.append("callable")])
    assert log == ["callable", "c", "b", "a"]


def test_close_all_after_a_failed_init_keeps_the_original_error():
    original = EdgeADError("allocation failed")
    cuda.close_all([Closable([], "a", cuda.CudaError("free failed"))], pending=original)
    if sys.version_info >= (3, 11):
        assert any("free failed" in note for note in original.__notes__)


def _gpu_reason():
    try:
        return None if cuda.device_count() > 0 else "no CUDA GPU is visible"
    except EdgeADError as exc:
        return str(exc)


GPU_REASON = _gpu_reason()


@pytest.mark.gpu
@pytest.mark.skipif(GPU_REASON is not None, reason=GPU_REASON or "")
def test_round_trip_through_the_gpu():
    data = np.random.default_rng(0).integers(0, 255, (3, 5, 7), dtype=np.uint8)
    with cuda.Stream() as stream, cuda.Event() as start, cuda.Event() as end, \
            cuda.PinnedBuffer(data.shape, np.uint8) as host_in, cuda.PinnedBuffer(data.shape, np.uint8) as host_out, \
            cuda.DeviceBuffer(data.nbytes) as first, cuda.DeviceBuffer(data.nbytes) as second:
        host_in.array[:] = data
        start.record(stream)
        cuda.copy_htod_async(first.ptr, host_in.array, stream)
        cuda.copy_dtod(second.ptr, first.ptr, data.nbytes, stream)
        cuda.copy_dtoh_async(host_out.array, second.ptr, stream)
        end.record(stream)
        end.synchronize()
        assert end.done()
        assert np.array_equal(host_out.array, data)
        assert cuda.Event.elapsed_ms(start, end) >= 0.0
    major, minor = cuda.compute_capability(0)
    assert major >= 5 and minor >= 0
