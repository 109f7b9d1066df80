"""`edgead doctor`: one line per component that edgead can use, and whether it works here."""

from __future__ import annotations

import importlib
import platform
import shutil
import subprocess


def _version(module: str) -> tuple[object | None, str]:
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # an installed package that fails to import is worth reporting as such
        reason = "not installed" if isinstance(exc, ModuleNotFoundError) else f"fails to import ({exc.__class__.__name__}: {exc})"
        return None, reason
    return mod, str(getattr(mod, "__version__", "installed"))


def _torch_line() -> str:
    torch, text = _version("torch")
    if torch is None:
        return f"torch          {text} (needed for training and export: pip install 'edgead[train]')"
    cuda = torch.cuda.is_available()
    return f"torch          {text}, CUDA {'available' if cuda else 'not available'}"


def _gpu_lines() -> list[str]:
    torch, _ = _version("torch")
    if torch is not None and torch.cuda.is_available():
        lines = []
        for i in range(torch.cuda.device_count()):
            major, minor = torch.cuda.get_device_capability(i)
            lines.append(f"gpu {i}          {torch.cuda.get_device_name(i)}, compute capability {major}.{minor} (sm_{major}{minor})")
        return lines
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (subprocess.SubprocessError, OSError) as exc:
            return [f"gpu            nvidia-smi failed: {exc}"]
        return [f"gpu {i}          {row.split(',')[0].strip()}, compute capability {row.split(',')[-1].strip()}" for i, row in enumerate(out.splitlines())] or ["gpu            none found by nvidia-smi"]
    return ["gpu            none found (no CUDA device visible to torch, no nvidia-smi)"]


# what each execution provider means to edgead (ONNX Runtime's names)
_PROVIDER_ROLES = {
    "TensorrtExecutionProvider": "TensorRT (FP32/FP16 graphs on CUDA)",
    "CUDAExecutionProvider": "CUDA (FP16 graph on the GPU)",
    "CPUExecutionProvider": "CPU",
}


def _providers(ort: object) -> str:
    """ONNX Runtime's providers, the ones edgead uses named for what they run; absent GPU ones said so."""
    available = list(ort.get_available_providers())
    shown = [f"{p} = {_PROVIDER_ROLES[p]}" if p in _PROVIDER_ROLES else p for p in available]
    missing = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p not in available]
    return ", ".join(shown) + (f" (no {' or '.join(missing)}: pip install onnxruntime-gpu on a CUDA machine)" if missing else "")


def _tensorrt_text(version: str) -> str:
    """The TensorRT version and what its major builds: 11 strongly typed only, 10 also the INT8 calibrator."""
    major = version.split(".")[0]
    if major == "10":
        return f"{version} (TensorRT 10: strongly typed engines from the FP16/Q-DQ graphs; --int8-calibrator available)"
    if major.isdigit() and int(major) >= 11:
        return f"{version} (TensorRT {major}: strongly typed engines only, from the FP16/Q-DQ graphs; no INT8 calibrator)"
    return f"{version} (edgead needs TensorRT 10 or later)"


def report_lines() -> list[str]:
    """Human-readable lines: python, numpy, opencv, torch, onnx, onnxruntime, tensorrt, cuda-python, GPUs."""
    lines = [f"python         {platform.python_version()} ({platform.machine()})"]
    for name, module in (("numpy", "numpy"), ("opencv", "cv2")):
        lines.append(f"{name:14s} {_version(module)[1]}")
    lines.append(_torch_line())
    lines.append(f"onnx           {_version('onnx')[1]}")
    ort, text = _version("onnxruntime")
    lines.append(f"onnxruntime    {text}" + (f", providers: {_providers(ort)}" if ort is not None else ""))
    trt, text = _version("tensorrt")
    lines.append(f"tensorrt       {_tensorrt_text(text) if trt else text + ' (engines are built on the device: see jetson/)'}")
    bindings, text = _version("cuda.bindings")  # cuda-python 12.6+; older releases install `cuda` alone
    lines.append(f"cuda-python    {text if bindings else _version('cuda')[1]}")
    return lines + _gpu_lines()
