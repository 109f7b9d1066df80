"""Run inside a subprocess that has the real TensorRT bindings (scripts/tensorrt_bindings.py): describe them.

    python tensorrt_probe.py describe < paths.json    -> {path: description} as JSON on stdout
    python tensorrt_probe.py exercise                 -> {"checks": names of the checks run, "cuda_driver": version or None}


A description: {"kind": "missing" | "class" | "enum-class" | "enum" | "property" | "method" | "value"}, with
"value" (an enum member's int), "members" (an enum class's {name: int}), "settable" (a property), and
"overloads" (a method's parameter lists as the bindings document them, without self: [[name, has_default], ...])
and "returns" (what each overload returns: 'bool', 'ICudaEngine', ...).
"""

import inspect
import json
import re
import sys

import tensorrt_bindings as trt

sys.modules["tensorrt"] = trt  # what the `tensorrt` package does on a full install


def resolve(path):
    """The object at a dotted path below the module, looked up statically (no descriptor runs); a KeyError when absent."""
    obj = trt
    for part in path.split("."):
        try:
            obj = inspect.getattr_static(obj, part) if isinstance(obj, type) else getattr(obj, part)
        except AttributeError:
            raise KeyError(path) from None
    return obj


def split_top(text):
    """Split on commas outside brackets: 'a: List[int], b: X = <E.A: 0>' -> ['a: List[int]', 'b: X = <E.A: 0>']."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "([{<"
        depth -= char in ")]}>"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [p.strip() for p in parts + [current] if p.strip()]


def overloads(name, function):
    """Parameter lists of a pybind11 function, from its docstring's signature lines; or inspect.signature for Python ones."""
    doc = getattr(function, "__doc__", None) or ""
    found = []
    for match in re.finditer(rf"^\s*(?:\d+\.\s*)?{re.escape(name)}\((.*)\)\s*->", doc, re.MULTILINE):
        params = []
        for part in split_top(match[1]):
            pname = part.split(":")[0].split("=")[0].strip()
            if pname not in ("self", "*args", "**kwargs"):
                params.append([pname, "=" in part])
        found.append(params)
    if not found:
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):
            return []
        params = [p for p in signature.parameters.values() if p.name != "self"]
        found = [[[p.name, p.default is not inspect.Parameter.empty] for p in params]]
    return found


def returns(name, function):
    """What each overload returns, as its docstring names it without the module: 'bool', 'ICudaEngine', ..."""
    doc = getattr(function, "__doc__", None) or ""
    found = re.findall(rf"^\s*(?:\d+\.\s*)?{re.escape(name)}\(.*\)\s*->\s*(\S+)\s*$", doc, re.MULTILINE)
    return [text.rsplit(".", 1)[-1] for text in found]


def describe(path):
    try:
        obj = resolve(path)
    except KeyError:
        return {"kind": "missing"}
    if isinstance(obj, type):
        members = getattr(obj, "__members__", None)
        if members is not None:
            return {"kind": "enum-class", "members": {k: int(v) for k, v in members.items()}}
        return {"kind": "class"}
    if isinstance(obj, property):
        return {"kind": "property", "settable": obj.fset is not None}
    if hasattr(type(obj), "__members__") and isinstance(type(obj).__members__, dict):
        return {"kind": "enum", "value": int(obj)}
    if callable(obj):
        name = path.rsplit(".", 1)[-1]
        return {"kind": "method", "overloads": overloads(name, obj), "returns": returns(name, obj)}
    return {"kind": "value", "value": repr(obj)}


def arity(function):
    return len([p for p in inspect.signature(function).parameters if p != "self"])


def exercise():
    """edgead's GPU-free TensorRT code on the real classes; AssertionError (a traceback, exit 1) on any difference."""
    import types
    from pathlib import Path
    import tempfile

    import numpy as np

    import edgead.export.tensorrt as builder
    import edgead.export.tensorrt_calibrator as calibrator_module
    import edgead.runtime.backends.tensorrt as backend
    import edgead.runtime.backends.tensorrt_common as common
    from edgead.artifact import Artifact
    from edgead.errors import BackendError, ConfigError, DependencyError
    from edgead.runtime import cuda

    major = common.tensorrt_major(trt.__version__)
    done = []

    def check(name, condition, detail=""):
        assert condition, f"{name}: {detail}"
        done.append(name)

    # the logger: a subclass of the real ILogger whose log() the real base accepts and whose messages are captured
    logger = common.tensorrt_logger()
    check("logger is a trt.ILogger", isinstance(logger, trt.ILogger))
    check("logger.log takes what ILogger.log takes", arity(type(logger).log) == len(overloads("log", trt.ILogger.log)[0]))
    with logger.capture() as messages:
        logger.log(trt.ILogger.Severity.ERROR, "bad")
        logger.log(trt.ILogger.Severity.WARNING, "odd")
        logger.log(trt.ILogger.Severity.INFO, "chatter")
    check("logger keeps errors and warnings", messages == ["error: bad", "warning: odd"], messages)

    # build plans and network flags with the real enums
    strongly = builder.plan_build(major, "fp16")
    check("network flags", builder.network_flags(trt, major, strongly) == (2 if major == 10 else 0), builder.network_flags(trt, major, strongly))
    if major == 10:
        weak = builder.plan_build(10, "int8", "calibrator")
        check("calibrator plan's builder flags exist", all(isinstance(getattr(trt.BuilderFlag, f), trt.BuilderFlag) for f in weak.builder_flags))
        check("calibrator plan's network is not strongly typed", builder.network_flags(trt, 10, weak) == 0)
    else:
        try:
            builder.plan_build(major, "int8", "calibrator")
        except ConfigError:
            check("TensorRT 11 refuses the calibrator plan", True)
        else:
            raise AssertionError("TensorRT 11 was given a calibrator plan")

    # dtypes and shapes as the real DataType and Dims come back from engines and networks
    want = {"FLOAT": "float32", "HALF": "float16", "INT8": "int8", "INT32": "int32", "INT64": "int64", "BOOL": "bool", "UINT8": "uint8"}
    names = {k: builder._dtype_name(trt, getattr(trt.DataType, k)) for k in want}
    check("dtype names", names == want, names)
    check("a dtype numpy lacks keeps its TensorRT name", builder._dtype_name(trt, trt.DataType.BF16) == str(trt.DataType.BF16))
    check("Dims to a named shape", builder._named_shape(trt.Dims([-1, 16, 16, 3])) == ["batch", 16, 16, 3])
    check("Dims item shape", tuple(trt.Dims([-1, 16, 16, 3]))[1:] == (16, 16, 3))

    # the entropy calibrator (TensorRT 10): a real IInt8EntropyCalibrator2 whose overrides match the base
    if major == 10:
        folder = Path(tempfile.mkdtemp())
        cache, written = folder / "calibration.cache", []
        cache.write_bytes(b"scales")
        from_cache = calibrator_module.entropy_calibrator(trt, None, 2, cache, lambda path, data: written.append((path, data)))
        check("calibrator is a trt.IInt8EntropyCalibrator2", isinstance(from_cache, trt.IInt8EntropyCalibrator2) and isinstance(from_cache, trt.IInt8Calibrator))
        for name in ("get_batch_size", "get_batch", "read_calibration_cache", "write_calibration_cache"):
            real = overloads(name, getattr(trt.IInt8EntropyCalibrator2, name))[0]
            check(f"calibrator.{name} takes what the base takes", arity(getattr(type(from_cache), name)) == len(real), real)
        check("calibrator batch size", from_cache.get_batch_size() == 2)
        check("calibrator without images has no batch", from_cache.get_batch(["images"]) is None)
        check("calibrator reads its cache", from_cache.read_calibration_cache() == b"scales")
        from_cache.write_calibration_cache(b"new")
        check("calibrator writes its cache", written == [(cache, b"new")])

        class Memory:  # device memory on the host: the calibrator's copies, without a GPU
            def __init__(self, nbytes):
                self.ptr, self.nbytes = 4096, nbytes

            def close(self):
                pass

        fake_cuda = types.SimpleNamespace(Stream=lambda: types.SimpleNamespace(synchronize=lambda: None, close=lambda: None),
                                          DeviceBuffer=Memory, copy_htod_async=lambda *a: None, close_all=cuda.close_all)
        real_cuda, calibrator_module.cuda = calibrator_module.cuda, fake_cuda
        try:
            images = np.zeros((5, 8, 8, 3), np.uint8)
            feeding = calibrator_module.entropy_calibrator(trt, images, 2, None, None)
            batches = [feeding.get_batch(["images"]) for _ in range(3)]
            check("calibrator feeds whole batches as device pointers", batches == [[4096], [4096], None], batches)
            check("calibrator with images does not read a cache", feeding.read_calibration_cache() is None)
            feeding.close()
        finally:
            calibrator_module.cuda = real_cuda

    # no GPU: with real cuda-python (no driver here) the builder and backend say so in their own words
    entry = {"backend": "tensorrt", "precision": "fp16", "member": "engines/features.fp16.plan"}
    artifact = Artifact(None, {"engines": [entry]}, {entry["member"]: b"plan"})
    try:
        driver = cuda.check(cuda.cudart().cudaDriverGetVersion(), "cudaDriverGetVersion")
    except DependencyError:
        driver = None  # cuda-python is not there: scripts/tensorrt_bindings.py fetches it; the test asks for these checks when it did
    if driver == 0:  # a machine without a CUDA driver, as CI's (where there is one, these errors cannot be provoked)
        check("real cuda-python without a driver sees 0 GPUs", cuda.device_count() == 0)
        check("tensorrt_available says there is no GPU", builder.tensorrt_available() == "no CUDA GPU is visible on this machine", builder.tensorrt_available())
        for name, use, message in [
            ("build_engine", lambda: builder.build_engine(b"onnx", "fp16", (16, 16)), "building a TensorRT engine needs a CUDA GPU"),
            ("TensorRTBackend", lambda: backend.TensorRTBackend(artifact, entry, "cuda"), "TensorRT needs a CUDA GPU"),
        ]:
            try:
                use()
            except BackendError as exc:
                check(f"{name} without a driver says it needs a GPU", message in str(exc), str(exc))
            else:
                raise AssertionError(f"{name} worked without a GPU")

    # a GPU that TensorRT cannot start on (here: the stub library returns no builder or runtime)
    one_gpu = types.SimpleNamespace(device_count=lambda: 1, compute_capability=lambda index=0: (8, 7), set_device=lambda index: None,
                                    close_all=cuda.close_all)
    builder.cuda = one_gpu
    for name, use, message in [
        ("trt.Builder", lambda: builder.build_engine(b"onnx", "fp32", batch_profile=(1, 1, 1)), "TensorRT could not create a builder"),
        ("trt.Runtime", lambda: backend.TensorRTEngine(b"plan", "engines/features.fp16.plan"), "TensorRT could not create its runtime"),
    ]:
        try:
            use()
        except BackendError as exc:
            check(f"{name} returning nullptr is a BackendError", message in str(exc), str(exc))
        else:
            raise AssertionError(f"{name} was created by a stub library")
    return {"checks": done, "cuda_driver": driver}


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "describe":
        print(json.dumps({path: describe(path) for path in json.load(sys.stdin)}))
    elif command == "exercise":
        print(json.dumps(exercise()))
    else:
        raise SystemExit(f"unknown command {command!r}")
