"""Fetch the real TensorRT 10 and 11 Python bindings, and stub libraries to import them with, without a GPU.

For tests/export/test_tensorrt_bindings.py, which checks every TensorRT attribute, enum value and signature
edgead uses against the real modules, and keeps the fakes in tests/export/test_tensorrt_api.py honest.
The bindings wheels (`tensorrt_cu12_bindings`, ~1.2 MB each) come from PyPI; the TensorRT libraries do not
install from PyPI here, so nine C symbols of libnvinfer, libnvonnxparser and libnvinfer_plugin are provided
by stubs that return NULL (compiled with the C compiler in a second): enough to import the module and
inspect it, not to build or run an engine. cuda-bindings (no libcuda needed to import) comes along so the
test also sees what cuda-python says on a machine without a driver.

    .venv/bin/python scripts/tensorrt_bindings.py     (the wheels match the Python that runs it)

Idempotent; everything goes under .tensorrt-bindings/ (git-ignored). Where something is missing (no network,
no C compiler, no wheel for this Python) it writes .tensorrt-bindings/unavailable.txt with why and exits 0:
the test then skips with that reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / ".tensorrt-bindings"
# TensorRT 10.3 is JetPack 6's; 11.4 the newest on PyPI (the cu12 and cu13 wheels have the same Python API)
PINS = {10: "tensorrt_cu12_bindings==10.3.0", 11: "tensorrt_cu12_bindings==11.4.0.106"}
CUDA_PINS = ("cuda-bindings==12.9.4", "cuda-pathfinder==1.9.1")
# what the bindings' tensorrt.so needs from each library (nm -D --undefined-only on 10.3.0 and 11.4.0.106)
STUBS = {
    "libnvinfer": (
        "void *createInferBuilder_INTERNAL(void *logger, int version)",
        "void *createInferRefitter_INTERNAL(void *engine, void *logger, int version)",
        "void *createInferRuntime_INTERNAL(void *logger, int version)",
        "void *getBuilderPluginRegistry(int capability)",
        "void *getPluginRegistry(void)",
    ),
    "libnvonnxparser": (
        "void *createNvOnnxParser_INTERNAL(void *network, void *logger, int version)",
        "void *createNvOnnxParserRefitter_INTERNAL(void *refitter, void *logger, int version)",
        "int getNvOnnxParserVersion(void)",
    ),
    "libnvinfer_plugin": ("int initLibNvInferPlugins(void *logger, const char *plugin_namespace)",),
}


class Unavailable(Exception):
    """Why the bindings cannot be set up here."""


def _run(command: list[str], what: str, **kwargs) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"{what} failed: {exc}") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise Unavailable(f"{what} failed: {' / '.join(tail)}")
    return done.stdout


def _download(pin: str, wheels: Path) -> Path:
    name, version = pin.split("==")
    stem = name.replace("-", "_")
    found = sorted(wheels.glob(f"{stem}-{version}-*.whl"))
    if not found:
        _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "-d", str(wheels), pin], f"pip download {pin}")
        found = sorted(wheels.glob(f"{stem}-{version}-*.whl"))
    if not found:
        raise Unavailable(f"pip download {pin} saved no wheel for Python {sys.version_info[0]}.{sys.version_info[1]}")
    return found[0]


def _unpack(wheel_files: list[Path], site: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=".site.", dir=site.parent))
    for wheel in wheel_files:
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(tmp)
    shutil.rmtree(site, ignore_errors=True)
    tmp.rename(site)


def _stub_libraries(major: int, stubs: Path) -> None:
    compiler = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise Unavailable("no C compiler (gcc or cc) to build the TensorRT stub libraries")
    stubs.mkdir(parents=True, exist_ok=True)
    for library, functions in STUBS.items():
        source = stubs / f"{library}.c"
        body = "\n".join(f"{f} {{ return {'0' if f.startswith('int ') else '(void *)0'}; }}" for f in functions)
        source.write_text("/* stand-ins: TensorRT's library is not installed; every call returns NULL or 0 */\n" + body + "\n")
        soname = f"{library}.so.{major}"
        _run([compiler, "-shared", "-fPIC", "-o", str(stubs / soname), f"-Wl,-soname,{soname}", str(source)], f"compiling {soname}")


def bindings_env(site_dirs: list[Path], stubs: Path | None) -> dict[str, str]:
    """The environment a subprocess imports the bindings with: the unpacked wheels first on sys.path, the stubs on the loader's path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, site_dirs), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if stubs is not None:
        env["LD_LIBRARY_PATH"] = os.pathsep.join([str(stubs), env.get("LD_LIBRARY_PATH", "")]).rstrip(os.pathsep)
    return env


def _done(ready: Path, key: str, pinned: object, *paths: Path) -> bool:
    """Whether an earlier run set this up with the same pins and its files are still there."""
    return ready.is_file() and json.loads(ready.read_text()).get(key) == pinned and all(p.exists() for p in paths)


def _prepare_cuda(wheels: Path) -> dict[str, str]:
    folder = ROOT / "cuda"
    ready = folder / "ready.json"
    if _done(ready, "pins", list(CUDA_PINS), folder / "site" / "cuda" / "bindings"):
        return json.loads(ready.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    _unpack([_download(pin, wheels) for pin in CUDA_PINS], folder / "site")
    check = "from cuda.bindings import runtime as rt; print(rt.cudaRuntimeGetVersion()[1])"
    runtime = _run([sys.executable, "-c", check], "importing cuda.bindings.runtime", env=bindings_env([folder / "site"], None)).strip()
    info = {"pins": list(CUDA_PINS), "site": str(folder / "site"), "cuda_runtime": runtime}
    ready.write_text(json.dumps(info, indent=2))
    return info


def _prepare(major: int, wheels: Path) -> dict[str, str]:
    folder = ROOT / str(major)
    ready = folder / "ready.json"
    if _done(ready, "pin", PINS[major], folder / "site" / "tensorrt_bindings", folder / "stubs" / f"libnvinfer.so.{major}"):
        return json.loads(ready.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    _unpack([_download(PINS[major], wheels)], folder / "site")
    _stub_libraries(major, folder / "stubs")
    check = "import tensorrt_bindings as trt; print(trt.__version__)"
    version = _run([sys.executable, "-c", check], f"importing the TensorRT {major} bindings", env=bindings_env([folder / "site"], folder / "stubs")).strip()
    info = {"major": major, "pin": PINS[major], "version": version, "site": str(folder / "site"), "stubs": str(folder / "stubs")}
    ready.write_text(json.dumps(info, indent=2))
    return info


def main() -> int:
    ROOT.mkdir(exist_ok=True)
    unavailable = ROOT / "unavailable.txt"
    wheels = ROOT / "wheels"
    wheels.mkdir(exist_ok=True)
    if not sys.platform.startswith("linux"):
        reasons = [f"the stub libraries are built for Linux; this is {sys.platform}"]
    else:
        reasons = []
        for step, label in [(lambda: _prepare(10, wheels), "TensorRT 10"), (lambda: _prepare(11, wheels), "TensorRT 11"), (lambda: _prepare_cuda(wheels), "cuda-bindings")]:
            try:
                info = step()
                print(f"tensorrt_bindings: {label} ready ({info.get('version') or info.get('pins')})")
            except Unavailable as exc:
                reasons.append(f"{label}: {exc}")
    if reasons:
        unavailable.write_text("\n".join(reasons) + "\n")
        print("tensorrt_bindings: not all bindings could be set up; the test skips them:\n  " + "\n  ".join(reasons), file=sys.stderr)
    else:
        unavailable.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
