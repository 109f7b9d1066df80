"""`edgead export`: read a model, build the requested engines, check each against the eager model, write atomically."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgead.artifact import Artifact, read_artifact, write_artifact
from edgead.errors import ArtifactError, ConfigError
from edgead.export.calibration import load_calibration_images
from edgead.export.engines import ExportOptions, ModelSource, add_engine, choose_formats, engine_precision, in_memory
from edgead.export.parity import auroc_report, parity_problems, parity_report
from edgead.graphs import graph_specs
from edgead.runtime.datasets import open_dataset


@dataclass
class ExportResult:
    path: Path
    engines: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    aurocs: dict[str, float] | None = None
    problems: list[str] = field(default_factory=list)


def model_sources(artifact: Artifact) -> dict[str, ModelSource]:
    """Per graph: the eager module rebuilt from the artifact's weights where torch is installed, and the artifact's ONNX graph."""
    specs = graph_specs(artifact.manifest, str(artifact.path))
    onnx = {}
    for name in specs:
        entry = artifact.engine("onnxruntime", "fp32", graph=name)
        onnx[name] = artifact.member(entry["member"]) if entry else None
    try:
        from edgead.kit.detectors import get_detector

        detector = get_detector(artifact.manifest["method"])
    except ImportError:
        missing = [name for name, graph in onnx.items() if graph is None]
        if missing:
            raise ArtifactError(f"{artifact.path} has no ONNX graph of {missing} and torch is not installed to rebuild one: install torch, or re-train") from None
        return {name: ModelSource(spec, None, onnx[name]) for name, spec in specs.items()}
    try:
        modules = detector.load_graphs(artifact)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise ArtifactError(f"{artifact.path}: the weights do not rebuild the model ({exc}); re-train it") from None
    return {name: ModelSource(spec, modules[name], onnx[name]) for name, spec in specs.items()}


def eager_graphs(sources: dict[str, ModelSource]) -> dict[str, Any] | None:
    """The eager modules by graph name, or None where torch is not installed (the ONNX engines are the reference then)."""
    if any(source.model is None for source in sources.values()):
        return None
    return {name: source.model for name, source in sources.items()}


def _calibration(manifest: dict[str, Any], calib_dir: str | None, size: tuple[int, int]):
    if calib_dir:
        return load_calibration_images(calib_dir, size)
    folder = manifest.get("training", {}).get("images_dir")
    if not folder or not Path(folder).is_dir():
        raise ConfigError(
            "INT8 needs calibration images: pass --calib DIR with good images"
            + (f" (the training images at {folder} are not on this machine)" if folder else "")
        )
    return load_calibration_images(folder, size)


def export_model(
    model_path: Path,
    precision: str,
    format_name: str | None = None,
    out: Path | None = None,
    batch_profile: tuple[int, int, int] = (1, 8, 32),
    workspace_mb: int = 1024,
    calib_dir: str | None = None,
    check_dir: str | None = None,
    cache_dir: Path | None = None,
    int8_mode: str = "qdq",
) -> ExportResult:
    """Add engines to the model at `model_path` (or write a copy to `out`); the input file is replaced only on success."""
    artifact = read_artifact(model_path)
    formats, notes = choose_formats(format_name, precision)
    sources = model_sources(artifact)
    graphs = eager_graphs(sources)
    manifest = copy.deepcopy(artifact.manifest)
    members = dict(artifact.members)
    size = tuple(manifest["input"]["size_px"])
    calibration = None
    if precision == "int8":
        calibration = _calibration(manifest, calib_dir, size)
    parity_info = manifest.get("parity_images")
    if not parity_info:
        raise ArtifactError(f"{model_path} carries no parity images (made by an older edgead?): re-train it")
    images = artifact.load_npy(parity_info["member"])
    entries = []
    for fmt in formats:
        options = ExportOptions(engine_precision(fmt, precision), batch_profile, workspace_mb, calibration, cache_dir, int8_mode)
        built = [add_engine(manifest, members, fmt, source, options) for source in sources.values()]
        parity = parity_report(in_memory(manifest, members), graphs, images, fmt.backend, options.precision)
        for entry in built:
            entry["parity"] = parity
        entries += built
    aurocs = None
    if check_dir:
        aurocs = auroc_report(in_memory(manifest, members), graphs, open_dataset(check_dir), entries)
        manifest["parity_auroc"] = {"data": str(check_dir), **aurocs}
    problems = list(dict.fromkeys(p for entry in entries for p in parity_problems(entry, aurocs)))  # graphs of one engine share a report
    path = write_artifact(out or model_path, manifest, members)
    return ExportResult(path, entries, notes, aurocs, problems)
