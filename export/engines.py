"""One table of formats drives export, parity checks and the manifest's engine entries."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgead.artifact import Artifact, sha256_bytes
from edgead.errors import ConfigError
from edgead.export.onnx import OPSET, export_onnx
from edgead.export.torchscript import export_torchscript
from edgead.runtime.backends.base import open_backend
from edgead.runtime.memory_bank import MemoryBank
from edgead.runtime.postprocess import score_features


@dataclass(frozen=True)
class EngineFormat:
    """An exportable format: which runtime backend runs it and how it is built."""

    name: str
    backend: str
    precision: str
    suffix: str
    build: Callable[[torch.nn.Module, tuple[int, int]], bytes]
    device: str = "cpu"


FORMATS: dict[tuple[str, str], EngineFormat] = {
    ("onnx", "fp32"): EngineFormat("onnx", "onnxruntime", "fp32", "onnx", export_onnx),
    ("torchscript", "fp32"): EngineFormat("torchscript", "torchscript", "fp32", "ts", export_torchscript),
}


def engine_member(fmt: EngineFormat) -> str:
    return f"engines/features.{fmt.precision}.{fmt.suffix}"


def add_engine(manifest: dict[str, Any], members: dict[str, bytes], fmt: EngineFormat, model: torch.nn.Module) -> dict[str, Any]:
    """Build `fmt` from `model` into `members` and record it in `manifest['engines']` (replacing a twin)."""
    size = tuple(manifest["input"]["size_px"])
    data = fmt.build(model, size)
    member = engine_member(fmt)
    members[member] = data
    h, w = size
    entry = {
        "backend": fmt.backend,
        "format": fmt.name,
        "precision": fmt.precision,
        "member": member,
        "sha256": sha256_bytes(data),
        "input_shapes": {"images": ["batch", h, w, 3]},
        "output_shapes": {"features": ["batch", manifest["features"]["channels"], *manifest["features"]["grid"]]},
        "dynamic_batch": True,
        "torch_version": torch.__version__,
    }
    if fmt.name == "onnx":
        entry["opset"] = OPSET
    manifest["engines"] = [
        e for e in manifest["engines"] if not (e["backend"] == fmt.backend and e["precision"] == fmt.precision)
    ] + [entry]
    manifest["members"] = {name: {"sha256": sha256_bytes(d)} for name, d in members.items()}
    return entry


def parity_report(
    manifest: dict[str, Any],
    members: dict[str, bytes],
    model: torch.nn.Module,
    images: np.ndarray,
    fmt: EngineFormat,
) -> dict[str, float]:
    """Largest feature and image-score differences of `fmt` through the runtime against the eager FP32 model.

    images: (N, H, W, 3) uint8 at the input size.
    """
    artifact = Artifact(path=Path("<in memory>"), manifest=manifest, members=members)
    with torch.inference_mode():
        eager = model(torch.from_numpy(images)).numpy()
    with open_backend(artifact, fmt.backend, fmt.device, fmt.precision) as backend:
        got = backend.infer(images)
    bank = MemoryBank(artifact.load_npy(manifest["memory_bank"]["member"]), k=manifest["memory_bank"]["k"])
    size = tuple(manifest["input"]["size_px"])
    sigma = manifest["postprocess"]["blur_sigma_px"]
    eager_scores, _ = score_features(eager, bank, size, sigma)
    got_scores, _ = score_features(got, bank, size, sigma)
    feature_diff = float(np.abs(got - eager).max())
    score_diff = float(np.abs(got_scores - eager_scores).max())
    return {
        "images": int(images.shape[0]),
        "max_abs_feature_diff": feature_diff,
        "max_rel_feature_diff": feature_diff / max(float(np.abs(eager).max()), 1e-12),
        "max_abs_score_diff": score_diff,
        "max_rel_score_diff": score_diff / max(float(np.abs(eager_scores).max()), 1e-12),
    }


def export_formats(
    manifest: dict[str, Any],
    members: dict[str, bytes],
    model: torch.nn.Module,
    formats: Sequence[tuple[str, str]],
    parity_images: np.ndarray,
) -> list[dict[str, Any]]:
    """Export each (format, precision) and attach its parity report; returns the engine entries."""
    entries = []
    for key in formats:
        if key not in FORMATS:
            known = ", ".join(f"{f}/{p}" for f, p in FORMATS)
            raise ConfigError(f"cannot export {key[0]}/{key[1]} here; this machine can build: {known}")
        fmt = FORMATS[key]
        entry = add_engine(manifest, members, fmt, model)
        entry["parity"] = parity_report(manifest, members, model, parity_images, fmt)
        entries.append(entry)
    return entries
