"""The TensorRT builder and backend against fakes of both API generations, on any machine.

`fake_tensorrt(10)` has what TensorRT 10 has (builder flags, calibrators, the STRONGLY_TYPED creation flag);
`fake_tensorrt(11)` lacks what TensorRT 11 removed (FP16/INT8 flags, int8_calibrator, the calibration
profile, the IInt8 calibrators, platform_has_fast_*), so a call to any of them fails here, not on a user's
device. The fake parser reads the real ONNX graph and refuses what TensorRT refuses (asymmetric Q/DQ,
precision flags on a strongly typed network); the fake engine runs the parsed graph with ONNX Runtime,
reading and writing fake device memory, so the backend's buffers and copies are checked end to end.
"""

import base64
import enum
import json
import sys
import types

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import edgead.export.tensorrt as builder_module
import edgead.export.tensorrt_calibrator as calibrator_module
import edgead.runtime.backends.tensorrt as backend_module
import edgead.runtime.backends.tensorrt_common as common
from edgead.artifact import Artifact
from edgead.errors import BackendError, ConfigError, DataError, EdgeADError
from edgead.export.onnx import export_onnx
from edgead.export.tensorrt import build_engine, plan_build

# ---------------------------------------------------------------- fake CUDA memory


class FakeCuda:
    """The parts of edgead.runtime.cuda the builder and backend use, on host memory."""

    def __init__(self):
        self.memory, self.next_ptr, self.freed = {}, 4096, []
        self.close_all = common.cuda.close_all
        fake = self

        class DeviceBuffer:
            def __init__(self, nbytes):
                self.nbytes, self.ptr = int(nbytes), fake.next_ptr
                fake.memory[self.ptr] = bytearray(self.nbytes)
                fake.next_ptr += self.nbytes + 256

            def close(self):
                if self.ptr:
                    fake.freed.append(self.ptr)
                    fake.memory.pop(self.ptr)
                    self.ptr = 0

        class PinnedBuffer:
            def __init__(self, shape, dtype):
                self.array = np.zeros(shape, dtype)
                self.nbytes = self.array.nbytes

            def close(self):
                self.array = None

        class Stream:
            handle = 7

            def synchronize(self):
                pass

            def close(self):
                pass

        class Event:
            def record(self, stream):
                pass

            def synchronize(self):
                pass

            def done(self):
                return True

            def close(self):
                pass

            @staticmethod
            def elapsed_ms(start, end):
                return 0.5

        self.DeviceBuffer, self.PinnedBuffer, self.Stream, self.Event = DeviceBuffer, PinnedBuffer, Stream, Event

    def device_count(self):
        return 1

    def set_device(self, index):
        pass

    def compute_capability(self, index=0):
        return 8, 7

    def copy_htod_async(self, dst_ptr, host_array, stream):
        data = np.ascontiguousarray(host_array).tobytes()
        self.memory[dst_ptr][: len(data)] = data

    def copy_dtoh_async(self, host_array, src_ptr, stream):
        raw = bytes(self.memory[src_ptr][: host_array.nbytes])
        host_array[...] = np.frombuffer(raw, host_array.dtype).reshape(host_array.shape)


# ---------------------------------------------------------------- fake TensorRT, one per major version


class DataType(enum.Enum):
    FLOAT = np.float32
    HALF = np.float16
    INT8 = np.int8
    INT32 = np.int32
    INT64 = np.int64
    UINT8 = np.uint8
    BOOL = np.bool_


ONNX_TO_TRT = {onnx.TensorProto.FLOAT: DataType.FLOAT, onnx.TensorProto.FLOAT16: DataType.HALF, onnx.TensorProto.UINT8: DataType.UINT8,
               onnx.TensorProto.INT32: DataType.INT32, onnx.TensorProto.INT64: DataType.INT64, onnx.TensorProto.INT8: DataType.INT8}


class Strict:
    """Like a pybind11 object: assigning an attribute the class does not declare raises AttributeError."""

    _fields: tuple = ()

    def __setattr__(self, name, value):
        if name not in self._fields:
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")
        object.__setattr__(self, name, value)


def fake_tensorrt(major):
    version = {10: "10.3.0.30", 11: "11.4.0.106"}[major]
    calls = []

    class ILogger:
        class Severity(enum.Enum):
            INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def __init__(self):
            pass

    class TensorIOMode(enum.Enum):
        NONE, INPUT, OUTPUT = range(3)

    class MemoryPoolType(enum.Enum):
        WORKSPACE = 0

    flag_values = dict(TF32=6, DEBUG=2, REFIT=4) | (dict(FP16=0, INT8=1, OBEY_PRECISION_CONSTRAINTS=9, DIRECT_IO=11) if major == 10 else {})
    BuilderFlag = enum.Enum("BuilderFlag", flag_values)  # the real values (test_tensorrt_bindings.py)
    creation = {10: ["EXPLICIT_BATCH", "STRONGLY_TYPED"], 11: ["STRONGLY_TYPED"]}[major]  # 11: kept, deprecated, ignored
    NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {n: i for i, n in enumerate(creation)})

    class Tensor:
        def __init__(self, name, shape, dtype):
            self.name, self.shape, self.dtype = name, tuple(shape), dtype

    class Network:
        def __init__(self, flags):
            self.flags, self.inputs, self.outputs, self.graph = flags, [], [], None
            strong = 1 << NetworkDefinitionCreationFlag.STRONGLY_TYPED.value
            self.strongly_typed = major >= 11 or bool(flags & strong)

        @property
        def num_inputs(self):
            return len(self.inputs)

        @property
        def num_outputs(self):
            return len(self.outputs)

        def get_input(self, index):
            return self.inputs[index]

        def get_output(self, index):
            return self.outputs[index]

    class Error:
        def __init__(self, text):
            self.text = text

        def node(self):
            return 0

        def desc(self):
            return self.text

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.errors = network, []

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, index):
            return self.errors[index]

        def parse(self, model, path=None):
            data, model = model, onnx.load_from_string(model)
            for node in model.graph.node:  # TensorRT quantizes symmetrically to signed int8 only
                if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
                    point = next((t for t in model.graph.initializer if t.name == node.input[2]), None)
                    if point is not None and (point.data_type != onnx.TensorProto.INT8 or np.any(onnx.numpy_helper.to_array(point))):
                        self.errors.append(Error(f"{node.name}: zero point must be int8 zeros (symmetric quantization)"))
            if self.errors:
                return False
            initializers = {t.name for t in model.graph.initializer}

            def tensor(value):
                dims = [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]
                return Tensor(value.name, dims, ONNX_TO_TRT[value.type.tensor_type.elem_type])

            self.network.inputs = [tensor(v) for v in model.graph.input if v.name not in initializers]
            self.network.outputs = [tensor(v) for v in model.graph.output]
            self.network.graph = data
            return True

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, input, min, opt, max):  # noqa: A002  (TensorRT's parameter names)
            self.shapes[input] = (tuple(min), tuple(opt), tuple(max))

    class TimingCache:
        def serialize(self):
            return b"timing"

    config_fields = ("_profiles", "_flags", "_pool", "_timing") + (("int8_calibrator", "_calibration_profile") if major == 10 else ())

    class BuilderConfig(Strict):
        _fields = config_fields

        def __init__(self):
            self._profiles, self._flags, self._pool, self._timing = [], set(), {}, None
            if major == 10:
                self.int8_calibrator = self._calibration_profile = None

        def set_memory_pool_limit(self, pool, pool_size):
            self._pool[pool] = pool_size

        def add_optimization_profile(self, profile):
            self._profiles.append(profile)
            return len(self._profiles) - 1

        def set_flag(self, flag):
            calls.append(("set_flag", flag.name))
            self._flags.add(flag.name)

        def create_timing_cache(self, serialized_timing_cache):
            return TimingCache()

        def set_timing_cache(self, cache, ignore_mismatch):
            self._timing = cache
            return True

        def get_timing_cache(self):
            return self._timing

    if major == 10:
        def set_calibration_profile(self, profile):
            self._calibration_profile = profile
            return True  # TensorRT returns False when it does not take the profile

        BuilderConfig.set_calibration_profile = set_calibration_profile

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags=0):
            calls.append(("create_network", flags))
            return Network(flags)

        def create_builder_config(self):
            return BuilderConfig()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            if network.strongly_typed and config._flags & {"FP16", "INT8"}:
                self.logger.log(ILogger.Severity.ERROR, "precision flags are not allowed on a strongly typed network")
                return None
            calibrator = getattr(config, "int8_calibrator", None)
            if calibrator is not None:
                calls.append(("calibrated_batches", _drain(calibrator, network)))
            (profile,) = config._profiles
            blob = {
                "graph": base64.b64encode(network.graph).decode(),
                "io": [[t.name, "input", list(t.shape), t.dtype.name] for t in network.inputs]
                + [[t.name, "output", list(t.shape), t.dtype.name] for t in network.outputs],
                "profile": {name: [list(s) for s in shapes] for name, shapes in profile.shapes.items()},
                "strongly_typed": network.strongly_typed,
                "flags": sorted(config._flags),
            }
            return json.dumps(blob).encode()

    if major == 10:
        Builder.platform_has_fast_fp16 = True  # deprecated in 10.5, removed in 11

    def _drain(calibrator, network):
        batches = 0
        while calibrator.get_batch([network.inputs[0].name]):
            batches += 1
        calibrator.write_calibration_cache(b"scales")
        return batches

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addresses = engine, {}, {}

        def set_input_shape(self, name, shape):
            low, _, high = self.engine.blob["profile"][name]
            if not low[0] <= shape[0] <= high[0]:
                return False
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            spec = self.engine.io[name]
            if spec[0] == "input":
                return self.shapes[name]
            batch = next(iter(self.shapes.values()))[0]
            return (batch, *spec[1][1:])

        def set_tensor_address(self, name, memory):
            self.addresses[name] = memory
            return True

        def execute_async_v3(self, stream_handle):
            memory = self.engine.cuda.memory
            feeds = {}
            for name, (mode, shape, dtype) in self.engine.io.items():
                if mode == "input":
                    dims = self.shapes[name]
                    count = int(np.prod(dims)) * np.dtype(dtype).itemsize
                    feeds[name] = np.frombuffer(bytes(memory[self.addresses[name]][:count]), dtype).reshape(dims)
            outputs = self.engine.session.run(None, feeds)
            for (name, (mode, _, dtype)), value in zip([kv for kv in self.engine.io.items() if kv[1][0] == "output"], outputs):
                data = np.ascontiguousarray(value, dtype).tobytes()
                memory[self.addresses[name]][: len(data)] = data
            return True

    class Engine:
        def __init__(self, data, fake_cuda):
            self.blob = json.loads(data)
            self.cuda = fake_cuda
            self.io = {name: (mode, shape, DataType[dtype].value) for name, mode, shape, dtype in self.blob["io"]}
            self.names = [row[0] for row in self.blob["io"]]
            self.session = tensorrt_arithmetic(base64.b64decode(self.blob["graph"]))

        @property
        def num_io_tensors(self):
            return len(self.names)

        def get_tensor_name(self, index):
            return self.names[index]

        def get_tensor_mode(self, name):
            return TensorIOMode.INPUT if self.io[name][0] == "input" else TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return DataType(self.io[name][2])

        def get_tensor_shape(self, name):
            return tuple(self.io[name][1])

        def get_tensor_profile_shape(self, name, profile_index):
            return [tuple(s) for s in self.blob["profile"][name]]

        def create_execution_context(self):
            return Context(self)

    class Runtime:
        fake_cuda = None

        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, serialized_engine):
            return Engine(serialized_engine, Runtime.fake_cuda)

    module = types.ModuleType("tensorrt")
    module.__version__ = version
    module.calls = calls
    for name, value in dict(ILogger=ILogger, TensorIOMode=TensorIOMode, MemoryPoolType=MemoryPoolType, BuilderFlag=BuilderFlag,
                            NetworkDefinitionCreationFlag=NetworkDefinitionCreationFlag, DataType=DataType, Builder=Builder,
                            OnnxParser=OnnxParser, Runtime=Runtime, nptype=lambda trt_type: trt_type.value,
                            # the classes TensorRT's factories return, under their real names (test_tensorrt_bindings.py compares them)
                            INetworkDefinition=Network, ITensor=Tensor, ParserError=Error, IOptimizationProfile=Profile,
                            ITimingCache=TimingCache, IBuilderConfig=BuilderConfig, ICudaEngine=Engine, IExecutionContext=Context).items():
        setattr(module, name, value)
    if major == 10:
        class IInt8EntropyCalibrator2:
            def __init__(self):
                pass

        module.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
    return module


@pytest.fixture(params=[10, 11], ids=["trt10", "trt11"])
def trt(request, monkeypatch):
    return install(request.param, monkeypatch)


def install(major, monkeypatch):
    module = fake_tensorrt(major)
    fake_cuda = FakeCuda()
    module.Runtime.fake_cuda = fake_cuda
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    monkeypatch.setattr(common, "_LOGGER", None)
    for target in (builder_module, backend_module, calibrator_module):
        monkeypatch.setattr(target, "cuda", fake_cuda)
    module.fake_cuda = fake_cuda
    return module


# ---------------------------------------------------------------- graphs


class Features(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3, stride=2, padding=1))

    def forward(self, images):
        return self.body((images.float().permute(0, 3, 1, 2) - 127.0) / 128.0)


class CodesAndImages(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(16, 4)
        self.decode = torch.nn.Conv2d(4, 3, 1)

    def forward(self, codes, images):
        latent = self.embed(codes).permute(0, 3, 1, 2)
        error = ((self.decode(latent) - images.float().permute(0, 3, 1, 2) / 255.0) ** 2).mean(1)
        return error, codes * 2


SIZE, PROFILE = (16, 16), (1, 2, 4)
IMAGES = np.random.default_rng(0).integers(0, 256, (7, *SIZE, 3), dtype=np.uint8)
CODES = np.random.default_rng(1).integers(0, 16, (7, 8, 8), dtype=np.int64)


@pytest.fixture(scope="module")
def features_onnx():
    return export_onnx(Features().eval(), SIZE)


@pytest.fixture(scope="module")
def two_io_onnx():
    return export_onnx(CodesAndImages().eval(), example_inputs=(CODES[:2], IMAGES[:2, :8, :8]), input_names=("codes", "images"), output_names=("error", "codes_x2"))


def tensorrt_arithmetic(graph):
    """An ONNX Runtime session that computes a Q/DQ graph as TensorRT does, on any CPU.

    With graph optimisations on, ONNX Runtime fuses DequantizeLinear -> Conv -> QuantizeLinear into its own
    int8 kernels, and on x86 CPUs without VNNI those sum u8 x s8 products in saturating int16 pairs
    (vpmaddubsw): the symmetric graph's error went from 0.010 to 0.273 of the output range on an AVX2-only
    CPU. TensorRT accumulates in int32; unfused, each DequantizeLinear, float op and QuantizeLinear runs
    alone, which is that arithmetic up to float rounding, whatever the CPU.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def reference(graph, feeds):
    return ort.InferenceSession(graph, providers=["CPUExecutionProvider"]).run(None, feeds)


def open_backend(built):
    entry = {"backend": "tensorrt", "member": f"engines/features.{built.info['precision']}.plan", **built.info}
    return backend_module.TensorRTBackend(Artifact(None, {"engines": [entry]}, {entry["member"]: built.data}), entry, "cuda")


def parsed_types(built):
    graph = onnx.load_from_string(base64.b64decode(json.loads(built.data)["graph"])).graph
    return {t.data_type for t in graph.initializer}, {n.op_type for n in graph.node}


# ---------------------------------------------------------------- the builder on both generations


def test_fakes_have_what_each_generation_has():
    ten, eleven = fake_tensorrt(10), fake_tensorrt(11)
    assert ten.BuilderFlag.FP16 and ten.IInt8EntropyCalibrator2 and ten.Builder.platform_has_fast_fp16
    for removed in ("BuilderFlag.FP16", "BuilderFlag.INT8", "IInt8EntropyCalibrator2", "Builder.platform_has_fast_fp16"):
        owner, _, name = removed.rpartition(".")
        with pytest.raises(AttributeError):
            getattr(getattr(eleven, owner) if owner else eleven, name)
    with pytest.raises(AttributeError):
        eleven.Builder(None).create_builder_config().int8_calibrator = object()


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_fp32_and_fp16_build_strongly_typed_from_the_typed_graph(trt, features_onnx, precision):
    built = build_engine(features_onnx, precision, SIZE, PROFILE)
    blob = json.loads(built.data)
    assert blob["strongly_typed"] and blob["flags"] == []  # precision from the graph, no builder flag
    major = int(trt.__version__.split(".")[0])
    assert ("create_network", 0 if major == 11 else 2) in trt.calls  # 10 opts in with STRONGLY_TYPED (1 << 1); 11 always is
    assert built.info["tensorrt_major"] == major and built.info["build_plan"]["strongly_typed"]
    assert built.info["input_shapes"] == {"images": ["batch", 16, 16, 3]} and built.info["output_shapes"] == {"features": ["batch", 16, 4, 4]}
    assert built.info["io_dtypes"] == {"images": "uint8", "features": "float32"}
    initializers, _ = parsed_types(built)
    assert (onnx.TensorProto.FLOAT16 in initializers) == (precision == "fp16")
    with open_backend(built) as backend:
        got = backend.infer(IMAGES)  # 7 images: chunks of 4 and 3 through fake device memory
    want = reference(features_onnx, {"images": IMAGES})[0]
    assert got.dtype == np.float32 and got.shape == (7, 16, 4, 4)
    assert np.abs(got - want).max() / np.abs(want).max() < (1e-6 if precision == "fp32" else 1e-2)


def test_int8_builds_from_the_symmetric_qdq_graph_on_both(trt, features_onnx):
    calibration = np.random.default_rng(2).integers(0, 256, (8, *SIZE, 3), dtype=np.uint8)
    built = build_engine(features_onnx, "int8", SIZE, PROFILE, calibration_images=calibration)
    assert json.loads(built.data)["strongly_typed"] and ("set_flag", "INT8") not in trt.calls
    _, ops = parsed_types(built)
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    with open_backend(built) as backend:
        got = backend.infer(IMAGES)
    want = reference(features_onnx, {"images": IMAGES})[0]
    # 0.0105 of the output range with ONNX Runtime 1.32 (per-channel int8 weights, symmetric int8 activations)
    assert np.abs(got - want).max() / np.abs(want).max() < 0.03


def test_the_cpu_int8_graph_is_refused_by_tensorrt_parsing(trt, features_onnx):
    from edgead.export.onnx_int8 import quantize_onnx

    calibration = np.random.default_rng(2).integers(0, 256, (4, *SIZE, 3), dtype=np.uint8)
    asymmetric = quantize_onnx(features_onnx, calibration)  # uint8 activations with zero points: for CPUs only
    network = trt.Builder(None).create_network(0)
    parser = trt.OnnxParser(network, None)
    assert not parser.parse(asymmetric) and "symmetric" in parser.get_error(0).desc()


def test_tensorrt10_calibrator_path_uses_the_flags_and_a_weak_network(monkeypatch, features_onnx, tmp_path):
    trt = install(10, monkeypatch)
    calibration = np.random.default_rng(2).integers(0, 256, (8, *SIZE, 3), dtype=np.uint8)
    cache = tmp_path / "calibration.cache"
    built = build_engine(features_onnx, "int8", SIZE, PROFILE, calibration_images=calibration, calibration_cache=cache, int8_mode="calibrator")
    blob = json.loads(built.data)
    assert not blob["strongly_typed"] and blob["flags"] == ["FP16", "INT8"] and ("create_network", 0) in trt.calls
    assert ("calibrated_batches", 4) in trt.calls and cache.read_bytes() == b"scales"
    assert built.info["calibration"] == {"images": 8, "batch": 2} and built.info["build_plan"]["calibrator"]
    again = build_engine(features_onnx, "int8", SIZE, PROFILE, calibration_cache=cache, int8_mode="calibrator")  # the cache alone
    assert again.info["calibration"]["images"] == 0


def test_tensorrt11_refuses_the_calibrator_with_what_to_do(monkeypatch, features_onnx):
    install(11, monkeypatch)
    calibration = np.zeros((4, *SIZE, 3), np.uint8)
    with pytest.raises(ConfigError, match=r"TensorRT 11 has no INT8 calibrator.*without --int8-calibrator"):
        build_engine(features_onnx, "int8", SIZE, PROFILE, calibration_images=calibration, int8_mode="calibrator")


def test_build_plans():
    assert plan_build(11, "fp16") == plan_build(10, "fp16")
    assert plan_build(10, "int8", "calibrator").builder_flags == ("FP16", "INT8")
    assert plan_build(11, "int8").graph == "int8-qdq" and not plan_build(11, "int8").builder_flags
    with pytest.raises(BackendError, match="too old"):
        plan_build(8, "fp16")
    with pytest.raises(ConfigError, match="INT8 mode"):
        plan_build(10, "int8", "minmax")


# ---------------------------------------------------------------- several inputs and outputs, other dtypes


def test_engine_with_several_named_inputs_and_outputs_of_other_dtypes(trt, two_io_onnx):
    built = build_engine(two_io_onnx, "fp16", batch_profile=PROFILE)
    assert built.info["input_shapes"] == {"codes": ["batch", 8, 8], "images": ["batch", 8, 8, 3]}
    assert built.info["io_dtypes"] == {"codes": "int64", "images": "uint8", "error": "float32", "codes_x2": "int64"}
    want_error, want_codes = reference(two_io_onnx, {"codes": CODES, "images": IMAGES[:, :8, :8]})
    with open_backend(built) as backend:
        error, codes = backend.infer(CODES, IMAGES[:, :8, :8])  # positional, in the engine's input order
        by_name = backend.infer({"images": IMAGES[:3, :8, :8], "codes": CODES[:3]})
        empty = backend.infer(CODES[:0], IMAGES[:0, :8, :8])
        with pytest.raises(DataError, match="takes 2 inputs"):
            backend.infer(CODES)
        with pytest.raises(DataError, match="different batch sizes"):
            backend.infer(CODES[:2], IMAGES[:3, :8, :8])
        with pytest.raises(DataError, match="'codes' takes int64"):
            backend.infer(CODES.astype(np.float32), IMAGES[:, :8, :8])
    assert error.dtype == np.float32 and codes.dtype == np.int64
    np.testing.assert_array_equal(codes, want_codes)
    assert np.abs(error - want_error).max() / np.abs(want_error).max() < 1e-2
    assert isinstance(by_name, tuple) and np.array_equal(by_name[1], want_codes[:3])
    assert empty[0].shape == (0, 8, 8) and empty[1].dtype == np.int64


def test_slots_free_every_buffer_they_allocated(trt, two_io_onnx):
    built = build_engine(two_io_onnx, "fp32", batch_profile=PROFILE)
    engine = backend_module.TensorRTEngine(built.data)
    with backend_module.TensorRTSlot(engine) as first, backend_module.TensorRTSlot(engine, max_batch=2) as second:
        first.submit(CODES[:4], IMAGES[:4, :8, :8])
        second.submit(CODES[4:6], IMAGES[4:6, :8, :8])
        a, b = first.wait(), second.wait()
        assert first.ready() and second.gpu_ms() == 0.5 and second.max_batch == 2
        with pytest.raises(DataError, match="batches of 1..2"):
            second.submit(CODES[:3], IMAGES[:3, :8, :8])
    np.testing.assert_array_equal(np.concatenate([a[1], b[1]]), CODES[:6] * 2)
    assert trt.fake_cuda.memory == {}  # 4 tensors x 2 slots, all freed


# ---------------------------------------------------------------- engines across major versions


def test_engine_of_one_major_is_refused_on_the_other_with_the_rebuild_command(monkeypatch, features_onnx):
    install(10, monkeypatch)
    built = build_engine(features_onnx, "fp16", SIZE, PROFILE)
    install(11, monkeypatch)
    with pytest.raises(BackendError, match=r"built with TensorRT 10 \(10\.3\.0\.30\); this device has TensorRT 11 .* `edgead export --engine fp16`"):
        open_backend(built)


def test_cache_key_records_the_major_version_and_the_int8_mode():
    from edgead.export.tensorrt import engine_cache_key

    args = ("ab" * 32, "int8", (1, 8, 16), (224, 224))
    assert engine_cache_key(*args, "10.3.0", "sm_87") != engine_cache_key(*args, "11.4.0", "sm_87")
    assert engine_cache_key(*args, "10.3.0", "sm_87", "cd" * 32, "qdq") != engine_cache_key(*args, "10.3.0", "sm_87", "cd" * 32, "calibrator")


# ---------------------------------------------------------------- what TensorRT refuses or cannot create


def test_tensorrt10_calibration_profile_refused_is_an_error_and_frees_the_calibrator(monkeypatch, features_onnx):
    trt = install(10, monkeypatch)
    config_class = type(trt.Builder(None).create_builder_config())
    monkeypatch.setattr(config_class, "set_calibration_profile", lambda self, profile: False)  # TensorRT did not take it
    calibration = np.random.default_rng(2).integers(0, 256, (8, *SIZE, 3), dtype=np.uint8)
    with pytest.raises(EdgeADError, match=r"TensorRT refused the INT8 calibration profile \(batches of 2 x \(16, 16, 3\) for input 'images'\).*without --int8-calibrator"):
        build_engine(features_onnx, "int8", SIZE, PROFILE, calibration_images=calibration, int8_mode="calibrator")
    assert trt.fake_cuda.memory == {}  # the calibrator's device buffer is freed


@pytest.mark.parametrize("factory", ["Builder", "Runtime"])
def test_a_builder_or_runtime_tensorrt_cannot_create_is_a_backend_error(trt, features_onnx, monkeypatch, factory):
    built = build_engine(features_onnx, "fp32", SIZE, PROFILE)

    def nullptr(self, logger):  # what the bindings raise when TensorRT returns no object (measured on 10.3 and 11.4)
        logger.log(trt.ILogger.Severity.ERROR, "CUDA initialization failure with error: 35")
        raise TypeError("pybind11::init(): factory function returned nullptr")

    monkeypatch.setattr(getattr(trt, factory), "__init__", nullptr)
    what = "a builder" if factory == "Builder" else "its runtime"
    with pytest.raises(BackendError, match=rf"(?s)TensorRT could not create {what}.*CUDA initialization failure with error: 35"):
        build_engine(features_onnx, "fp32", SIZE, PROFILE) if factory == "Builder" else open_backend(built)
