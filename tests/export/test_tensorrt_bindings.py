"""The TensorRT code and its fakes against the real TensorRT 10 and 11 Python bindings, on any Linux machine.

`scripts/tensorrt_bindings.py` fetches the bindings wheels from PyPI (10.3.0, JetPack 6's, and 11.4.0.106) and
builds stub libraries for the nine symbols they need, so the real module imports without TensorRT's libraries
or a GPU; each major runs in its own subprocess (tensorrt_probe.py). Checked here:

- every TensorRT attribute, enum value and call `export/` and `runtime/` make (USED), and what 11 removed;
- the fakes of test_tensorrt_api.py: nothing the real module lacks, the same enum values, the same
  parameter names (a fake that differs from the bindings fails here, not on a user's device);
- the builder, logger, calibrator and backend code that needs no GPU, on the real classes and real cuda-python;
- and, read from the code without the bindings: every `trt.X` it uses is in USED, no checked result is dropped.

The bindings tests skip, with the reason, where the bindings are not set up (run the script).
"""

import ast
import enum
import importlib.util
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BINDINGS = REPO / ".tensorrt-bindings"
PROBE = Path(__file__).with_name("tensorrt_probe.py")
MAJORS = (10, 11)


CLASS, PROPERTY, ENUM, VALUE = ("class",), ("property", False), ("enum", None), ("value",)
SETTABLE = ("property", True)


def call(positional, *keywords, returns=None):
    """A call edgead makes: `positional` arguments, then these keywords; `returns`: the result it checks (bool, int, or an
    object that is None on failure), which must then never be dropped (test_checked_results_are_never_dropped)."""
    return ("call", positional, keywords, returns)


def enum_value(value):
    return ("enum", value)


# Every TensorRT name edgead's code uses: (path, on TensorRT 10, on TensorRT 11); None = must be absent.
# tensorrt_common (logger, versions), export/tensorrt.py (builder), tensorrt_calibrator.py, runtime/backends/tensorrt.py.
USED = [
    ("__version__", VALUE, VALUE),
    ("ILogger", CLASS, CLASS),
    ("ILogger.__init__", call(0), call(0)),
    ("ILogger.log", call(2), call(2)),
    ("ILogger.Severity.INTERNAL_ERROR", ENUM, ENUM),
    ("ILogger.Severity.ERROR", ENUM, ENUM),
    ("ILogger.Severity.WARNING", ENUM, ENUM),
    ("ILogger.Severity.INFO", ENUM, ENUM),
    ("NetworkDefinitionCreationFlag.STRONGLY_TYPED", enum_value(1), enum_value(0)),  # 1 << value is the flag
    ("Builder", CLASS, CLASS),
    ("Builder.__init__", call(1), call(1)),
    ("Builder.create_network", call(1), call(1)),
    ("Builder.create_builder_config", call(0), call(0)),
    ("Builder.create_optimization_profile", call(0), call(0)),
    ("Builder.build_serialized_network", call(2, returns="IHostMemory"), call(2, returns="IHostMemory")),
    ("OnnxParser.__init__", call(2), call(2)),
    ("OnnxParser.parse", call(1, returns="bool"), call(1, returns="bool")),
    ("OnnxParser.num_errors", PROPERTY, PROPERTY),
    ("OnnxParser.get_error", call(1), call(1)),
    ("ParserError.node", call(0), call(0)),
    ("ParserError.desc", call(0), call(0)),
    ("INetworkDefinition.num_inputs", PROPERTY, PROPERTY),
    ("INetworkDefinition.num_outputs", PROPERTY, PROPERTY),
    ("INetworkDefinition.get_input", call(1), call(1)),
    ("INetworkDefinition.get_output", call(1), call(1)),
    ("ITensor.name", PROPERTY, PROPERTY),
    ("ITensor.shape", PROPERTY, PROPERTY),
    ("ITensor.dtype", PROPERTY, PROPERTY),
    ("IBuilderConfig.set_memory_pool_limit", call(2), call(2)),
    ("MemoryPoolType.WORKSPACE", ENUM, ENUM),
    ("IBuilderConfig.add_optimization_profile", call(1, returns="int"), call(1, returns="int")),  # -1: refused
    ("IOptimizationProfile.set_shape", call(4), call(4)),
    ("IBuilderConfig.set_flag", call(1), call(1)),
    ("BuilderFlag.FP16", ENUM, None),
    ("BuilderFlag.INT8", ENUM, None),
    ("IBuilderConfig.int8_calibrator", SETTABLE, None),
    ("IBuilderConfig.set_calibration_profile", call(1, returns="bool"), None),
    ("IInt8EntropyCalibrator2", CLASS, None),
    ("IInt8EntropyCalibrator2.__init__", call(0), None),
    ("IInt8EntropyCalibrator2.get_batch_size", call(0), None),
    ("IInt8EntropyCalibrator2.get_batch", call(1), None),
    ("IInt8EntropyCalibrator2.read_calibration_cache", call(0), None),
    ("IInt8EntropyCalibrator2.write_calibration_cache", call(1), None),
    ("IBuilderConfig.create_timing_cache", call(1), call(1)),
    ("IBuilderConfig.set_timing_cache", call(1, "ignore_mismatch", returns="bool"), call(1, "ignore_mismatch", returns="bool")),
    ("IBuilderConfig.get_timing_cache", call(0), call(0)),
    ("ITimingCache.serialize", call(0), call(0)),
    ("nptype", call(1), call(1)),
    ("Dims", CLASS, CLASS),
    ("Runtime.__init__", call(1), call(1)),
    ("Runtime.deserialize_cuda_engine", call(1, returns="ICudaEngine"), call(1, returns="ICudaEngine")),
    ("ICudaEngine.num_io_tensors", PROPERTY, PROPERTY),
    ("ICudaEngine.get_tensor_name", call(1), call(1)),
    ("ICudaEngine.get_tensor_shape", call(1), call(1)),
    ("ICudaEngine.get_tensor_mode", call(1), call(1)),
    ("TensorIOMode.INPUT", ENUM, ENUM),
    ("ICudaEngine.get_tensor_dtype", call(1), call(1)),
    ("ICudaEngine.get_tensor_profile_shape", call(2), call(2)),
    ("ICudaEngine.create_execution_context", call(0, returns="IExecutionContext"), call(0, returns="IExecutionContext")),
    ("IExecutionContext.set_input_shape", call(2, returns="bool"), call(2, returns="bool")),
    ("IExecutionContext.get_tensor_shape", call(1), call(1)),
    ("IExecutionContext.set_tensor_address", call(2, returns="bool"), call(2, returns="bool")),
    ("IExecutionContext.execute_async_v3", call(1, returns="bool"), call(1, returns="bool")),
]

# the fakes' instrumentation, which the real module has no reason to have
FAKE_ONLY = {"calls", "fake_cuda", "Runtime.fake_cuda"}
# classes edgead constructs (the others come out of TensorRT's factories): their fakes' __init__ must match
CONSTRUCTED = {"Builder", "OnnxParser", "Runtime", "ILogger", "IInt8EntropyCalibrator2"}


def _unavailable_reason(major):
    ready = BINDINGS / str(major) / "ready.json"
    if ready.is_file() and (BINDINGS / str(major) / "site" / "tensorrt_bindings").is_dir():
        return None
    why = BINDINGS / "unavailable.txt"
    lines = [line for line in why.read_text().splitlines() if line.startswith(f"TensorRT {major}:")] if why.is_file() else []
    detail = lines[0].split(": ", 1)[1] if lines else "not fetched"
    return f"TensorRT {major} bindings are not set up ({detail}): run `.venv/bin/python scripts/tensorrt_bindings.py`"


def _probe(major, command, stdin=""):
    sites = [BINDINGS / str(major) / "site"]
    if (BINDINGS / "cuda" / "ready.json").is_file():
        sites.append(BINDINGS / "cuda" / "site")
    spec = importlib.util.spec_from_file_location("tensorrt_bindings_script", REPO / "scripts" / "tensorrt_bindings.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    env = script.bindings_env(sites, BINDINGS / str(major) / "stubs")
    done = subprocess.run([sys.executable, str(PROBE), command], input=stdin, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, f"the TensorRT {major} probe failed:\n{done.stderr[-4000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(params=MAJORS, ids=["trt10", "trt11"], scope="module")
def major(request):
    reason = _unavailable_reason(request.param)
    if reason is not None:
        pytest.skip(reason)
    return request.param


def _fake_module():
    spec = importlib.util.spec_from_file_location("tensorrt_fakes", Path(__file__).with_name("test_tensorrt_api.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fakes():
    return _fake_module()


def _parameters(function):
    return [[p.name, p.default is not inspect.Parameter.empty] for p in inspect.signature(function).parameters.values() if p.name != "self"]


def fake_surface(fake):
    """What a fake tensorrt module offers: {path: description}, in the probe's vocabulary (see tensorrt_probe.py)."""
    surface = {}

    def add_enum(path, cls):
        surface[path] = {"kind": "enum-class", "members": {m.name: m.value for m in cls}}

    def add_class(path, cls, name):
        surface[path] = {"kind": "class"}
        for base in reversed([c for c in cls.__mro__ if c.__module__ == cls.__module__ and c.__name__ != "Strict"]):
            for attr, value in vars(base).items():
                if attr.startswith("_") and not (attr == "__init__" and name in CONSTRUCTED):
                    continue
                here = f"{path}.{attr}"
                if isinstance(value, enum.EnumMeta):
                    add_enum(here, value)
                elif isinstance(value, property):
                    surface[here] = {"kind": "property"}
                elif inspect.isfunction(value):
                    surface[here] = {"kind": "method", "parameters": _parameters(value)}
                elif not isinstance(value, (staticmethod, classmethod)):
                    surface[here] = {"kind": "value"}
        for attr in getattr(cls, "_fields", ()):  # what a Strict (pybind11-like) fake lets one assign; _name: the fake's own state
            if not attr.startswith("_"):
                surface[f"{path}.{attr}"] = {"kind": "field"}

    for name, value in vars(fake).items():
        if name.startswith("_") and name != "__version__":
            continue
        if isinstance(value, enum.EnumMeta):
            add_enum(name, value)
        elif isinstance(value, type):
            add_class(name, value, name)
        elif inspect.isfunction(value):
            surface[name] = {"kind": "method", "parameters": _parameters(value)}
        else:
            surface[name] = {"kind": "value"}
    return {path: description for path, description in surface.items() if path not in FAKE_ONLY}


def _fits(parameters, overloads):
    """A fake's parameters are a prefix of one real overload (same names), the rest of which has defaults."""
    if not overloads:
        return True  # no signature in the bindings' docstring to compare with
    names = [p[0] for p in parameters]
    return any([p[0] for p in real[: len(names)]] == names and all(p[1] for p in real[len(names):]) for real in overloads)


def fake_differences(surface, real):
    """How a fake's surface differs from the real module's descriptions, one line each; empty when honest."""
    problems = []
    for path, fake in sorted(surface.items()):
        got = real[path]
        if got["kind"] == "missing":
            problems.append(f"{path}: the fake has it, TensorRT does not")
        elif fake["kind"] == "enum-class":
            if got["kind"] != "enum-class":
                problems.append(f"{path}: an enum in the fake, {got['kind']} in TensorRT")
                continue
            for member, value in fake["members"].items():
                if member not in got["members"]:
                    problems.append(f"{path}.{member}: the fake has it, TensorRT does not")
                elif isinstance(value, int) and value != got["members"][member]:
                    problems.append(f"{path}.{member}: {value} in the fake, {got['members'][member]} in TensorRT")
        elif fake["kind"] == "class" and got["kind"] not in ("class", "enum-class"):
            problems.append(f"{path}: a class in the fake, {got['kind']} in TensorRT")
        elif fake["kind"] in ("property", "field") and got["kind"] != "property":
            problems.append(f"{path}: a {fake['kind']} in the fake, {got['kind']} in TensorRT")
        elif fake["kind"] == "field" and not got["settable"]:
            problems.append(f"{path}: assignable in the fake, read-only in TensorRT")
        elif fake["kind"] == "method":
            if got["kind"] != "method":
                problems.append(f"{path}: a method in the fake, {got['kind']} in TensorRT")
            elif not _fits(fake["parameters"], got["overloads"]):
                problems.append(f"{path}: the fake takes {[p[0] for p in fake['parameters']]}, TensorRT {[[p[0] for p in o] for o in got['overloads']]}")
    return problems


def used_differences(major, real):
    problems = []
    for path, *specs in USED:
        want, got = specs[MAJORS.index(major)], real[path]
        if want is None:
            if got["kind"] != "missing":
                problems.append(f"{path}: edgead expects TensorRT {major} not to have it, but it does")
            continue
        if got["kind"] == "missing":
            problems.append(f"{path}: edgead uses it, TensorRT {major} does not have it")
        elif want[0] == "class" and got["kind"] not in ("class", "enum-class"):
            problems.append(f"{path}: edgead uses a class, TensorRT {major} has a {got['kind']}")
        elif want[0] == "property" and (got["kind"] != "property" or (want[1] and not got["settable"])):
            problems.append(f"{path}: edgead {'assigns' if want[1] else 'reads'} a property, TensorRT {major} has {got}")
        elif want[0] == "enum" and (got["kind"] != "enum" or (want[1] is not None and got["value"] != want[1])):
            problems.append(f"{path}: edgead expects the enum value {want[1]}, TensorRT {major} has {got}")
        elif want[0] == "call":
            _, positional, keywords, result = want
            fits = got["kind"] == "method" and (not got["overloads"] or any(_binds(o, positional, keywords) for o in got["overloads"]))
            if not fits:
                problems.append(f"{path}: edgead calls it with {positional} arguments and {list(keywords)}, TensorRT {major} takes {got.get('overloads', got)}")
            elif result is not None and set(got["returns"]) != {result}:
                problems.append(f"{path}: edgead checks a {result} result, TensorRT {major} returns {got['returns']}")
    return problems


def _binds(overload, positional, keywords):
    """Whether f(<positional args>, **keywords) binds to a parameter list [[name, has_default], ...]."""
    if positional > len(overload):
        return False
    rest = overload[positional:]
    names = {p[0] for p in rest}
    return set(keywords) <= names and all(p[1] or p[0] in keywords for p in rest)


@pytest.fixture(scope="module")
def real(major, fakes):
    """The real module's descriptions of every path the project uses and the fakes offer."""
    paths = {p for p, *_ in USED} | set(fake_surface(fakes.fake_tensorrt(major)))
    return _probe(major, "describe", json.dumps(sorted(paths)))


def test_every_tensorrt_call_edgead_makes_is_in_the_real_bindings(major, real):
    problems = used_differences(major, real)
    assert not problems, "\n".join(problems)
    print(f"TensorRT {major}: {sum(1 for _, *s in USED if s[MAJORS.index(major)] is not None)} names used, "
          f"{sum(1 for _, *s in USED if s[MAJORS.index(major)] is None)} checked absent")


def test_the_fakes_have_nothing_the_real_bindings_lack(major, real, fakes):
    surface = fake_surface(fakes.fake_tensorrt(major))
    problems = fake_differences(surface, real)
    assert not problems, "the fakes in test_tensorrt_api.py differ from the real bindings:\n" + "\n".join(problems)
    print(f"TensorRT {major}: {len(surface)} fake attributes match the real bindings")


def test_a_fake_that_differs_from_the_bindings_fails(major, real, fakes):
    """The check above is not vacuous: an attribute, a value or a parameter the real module lacks is reported."""
    fake = fakes.fake_tensorrt(major)
    fake.Builder.platform_has_fast_fp16 = True  # removed in TensorRT 11
    fake.Builder.max_batch_size = 16  # implicit batch, gone since TensorRT 10
    flags = {m.name: m.value for m in fake.NetworkDefinitionCreationFlag}
    fake.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {**flags, "STRONGLY_TYPED": 5})
    fake.IBuilderConfig.set_timing_cache = lambda self, cache, ignore: True  # a renamed parameter
    surface = fake_surface(fake)
    real = {**real, **_probe(major, "describe", json.dumps(sorted(set(surface) - set(real))))}
    problems = fake_differences(surface, real)
    assert "Builder.max_batch_size: the fake has it, TensorRT does not" in problems
    assert ("Builder.platform_has_fast_fp16: the fake has it, TensorRT does not" in problems) == (major == 11)
    assert f"NetworkDefinitionCreationFlag.STRONGLY_TYPED: 5 in the fake, {1 if major == 10 else 0} in TensorRT" in problems
    assert any(p.startswith("IBuilderConfig.set_timing_cache: the fake takes ['cache', 'ignore']") for p in problems), problems


def test_gpu_free_code_runs_on_the_real_classes(major):
    """Logger, build plans, dtypes and shapes, the calibrator (10), and the no-GPU errors, with real cuda-python."""
    report = _probe(major, "exercise")
    done = report["checks"]
    expected = {"logger is a trt.ILogger", "logger keeps errors and warnings", "network flags", "dtype names", "Dims to a named shape",
                "trt.Builder returning nullptr is a BackendError", "trt.Runtime returning nullptr is a BackendError"}
    if major == 10:
        expected |= {"calibrator is a trt.IInt8EntropyCalibrator2", "calibrator.get_batch takes what the base takes",
                     "calibrator feeds whole batches as device pointers", "calibrator reads its cache", "calibrator writes its cache"}
    else:
        expected.add("TensorRT 11 refuses the calibrator plan")
    if (BINDINGS / "cuda" / "ready.json").is_file() and report["cuda_driver"] == 0:  # real cuda-python, no driver (CI)
        expected |= {"real cuda-python without a driver sees 0 GPUs", "build_engine without a driver says it needs a GPU",
                     "TensorRTBackend without a driver says it needs a GPU"}
    assert expected <= set(done), sorted(expected - set(done))
    print(f"TensorRT {major}: {len(done)} checks of edgead's code on the real classes (CUDA driver version {report['cuda_driver']})")


# ---------------------------------------------------------------- the product code, read (no bindings needed)

PRODUCT = [REPO / "export" / "tensorrt.py", REPO / "export" / "tensorrt_calibrator.py",
           REPO / "runtime" / "backends" / "tensorrt.py", REPO / "runtime" / "backends" / "tensorrt_common.py"]


def _trt_paths(tree):
    """Dotted names read off the tensorrt module (`trt.X.Y`, `self.trt.X`), outermost only, with their lines."""
    found, inner = [], set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or id(node) in inner:
            continue
        parts, root = [], node
        while isinstance(root, ast.Attribute):
            parts.append(root.attr)
            inner.add(id(root.value))
            root = root.value
        is_trt = (isinstance(root, ast.Name) and root.id == "trt") or (
            isinstance(root, ast.Name) and root.id == "self" and parts and parts[-1] == "trt" and len(parts) > 1)
        if is_trt:
            names = parts[::-1][1:] if root.id == "self" else parts[::-1]
            found.append((".".join(names), node.lineno))
    return found


def test_every_tensorrt_name_the_code_reads_is_in_the_table():
    """USED is what the real bindings are checked for: a new `trt.X` in the code must be added to it."""
    used = {path for path, *_ in USED}
    missing = []
    for path in PRODUCT:
        for name, line in _trt_paths(ast.parse(path.read_text())):
            if name not in used and not any(u.startswith(name + ".") for u in used):
                missing.append(f"{path.relative_to(REPO)}:{line}: trt.{name}")
    assert not missing, "add these to USED in test_tensorrt_bindings.py:\n" + "\n".join(missing)


def test_checked_results_are_never_dropped():
    """A TensorRT call whose result says whether it worked (USED's `returns`) is never a bare statement."""
    checked = {path.rsplit(".", 1)[1] for path, *specs in USED for spec in specs if spec and spec[0] == "call" and spec[3]}
    assert {"set_calibration_profile", "set_tensor_address", "parse", "add_optimization_profile"} <= checked
    dropped = []
    for path in PRODUCT:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Attribute):
                if node.value.func.attr in checked:
                    dropped.append(f"{path.relative_to(REPO)}:{node.lineno}: the result of {node.value.func.attr}() is ignored")
    assert not dropped, "\n".join(dropped)
