"""`edgead export`: read a model, build the requested engines, check each against the eager model, write atomically."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgead.artifact import Artifact, read_artifact, write_artifact
from edgead.reading import DEFAULT_LIMITS, ReadLimits
from edgead.errors import ArtifactError, ConfigError
from edgead.export.calibration import load_calibration_images
from edgead.export.engines import ExportOptions, ModelSource, add_engine, choose_formats, engine_precision, in_memory
from edgead.export.parity import auroc_report, parity_device, parity_problems, parity_report, reference_backends
from edgead.export.thresholds import GoodImages, Reference, calibrate_engine, good_images, reference_outputs
from edgead.graphs import graph_specs, head_section
from edgead.runtime.datasets import open_dataset
from edgead.runtime.predictor import Predictor
from edgead.runtime.preprocess import resize_to_input


@dataclass
class ExportResult:
    path: Path
    engines: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    aurocs: dict[str, float] | None = None
    problems: list[str] = field(default_factory=list)
    model_threshold: float = 0.0


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


def _calibration(manifest: dict[str, Any], calib_dir: str | None, size: tuple[int, int], good: GoodImages | None):
    if good is not None:  # the listed training images (not every image under their folder: it may hold test/)
        return np.stack([resize_to_input(image, size) for image in good.images])
    if calib_dir:
        return load_calibration_images(calib_dir, size)
    folder = manifest.get("training", {}).get("images_dir")
    if not folder or not Path(folder).is_dir():
        raise ConfigError(
            "INT8 needs calibration images: pass --calib DIR with good images"
            + (f" (the training images at {folder} are not on this machine)" if folder else "")
        )
    return load_calibration_images(folder, size)


class EngineThresholds:
    """Sets each built engine's own threshold (on its main-graph entry); the FP32 reference's outputs are computed once."""

    def __init__(self, manifest: dict[str, Any], graphs: dict[str, Any] | None, good: GoodImages | None) -> None:
        self.manifest, self.graphs, self.good = manifest, graphs, good
        self.reference: Reference | None = None

    def calibrate(self, artifact: Artifact, built: list[dict[str, Any]]) -> str | None:
        """Calibrate the engines in `built` (one backend and precision); a note for the user where that cannot be done."""
        name = f"{built[0]['format']}/{built[0]['precision']}"
        main = next(e for e in built if e["graph"] == head_section(self.manifest)["graph"])
        if "calibration" not in self.manifest["postprocess"]:
            return f"{name} keeps the model's threshold: the model has no cross-calibration (trained by an older edgead; re-train it)"
        if self.good is None:
            return f"{name} keeps the model's threshold: no good images to calibrate it (the training images are not on this machine; pass --calib DIR)"
        try:
            if self.reference is None:
                with Predictor(artifact, reference_backends(artifact, self.graphs), precision="fp32") as reference:
                    self.reference = reference_outputs(reference, self.good)
            device = parity_device(main["backend"], main["precision"])
            with Predictor(artifact, main["backend"], device, main["precision"], trust_code=True) as engine:  # the engine just built
                main["calibration"] = calibrate_engine(engine, self.reference, self.manifest, name)
        except ConfigError as exc:
            return f"{name} keeps the model's threshold: {exc}"
        main["threshold"] = main["calibration"]["threshold"]
        return None


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
    limits: ReadLimits = DEFAULT_LIMITS,
) -> ExportResult:
    """Add engines to the model at `model_path` (or write a copy to `out`); the input file is replaced only on success.

    `limits`: what reading the model may unpack (--max-model-mb, --max-manifest-mb).
    """
    artifact = read_artifact(model_path, limits)
    formats, notes = choose_formats(format_name, precision)
    sources = model_sources(artifact)
    graphs = eager_graphs(sources)
    manifest = copy.deepcopy(artifact.manifest)
    members = dict(artifact.members)
    size = tuple(manifest["input"]["size_px"])
    good = good_images(manifest, calib_dir)
    calibration = None
    if precision == "int8":
        calibration = _calibration(manifest, calib_dir, size, good)
    parity_info = manifest.get("parity_images")
    if not parity_info:
        raise ArtifactError(f"{model_path} carries no parity images (made by an older edgead?): re-train it")
    images = artifact.load_npy(parity_info["member"])
    entries = []
    thresholds = EngineThresholds(manifest, graphs, good)
    for fmt in formats:
        options = ExportOptions(engine_precision(fmt, precision), batch_profile, workspace_mb, calibration, cache_dir, int8_mode)
        built = [add_engine(manifest, members, fmt, source, options) for source in sources.values()]
        parity = parity_report(in_memory(manifest, members), graphs, images, fmt.backend, options.precision)
        for entry in built:
            entry["parity"] = parity
        note = thresholds.calibrate(in_memory(manifest, members), built)
        if note:
            notes.append(note)
        entries += built
    aurocs = None
    if check_dir:
        aurocs = auroc_report(in_memory(manifest, members), graphs, open_dataset(check_dir), entries)
        manifest["parity_auroc"] = {"data": str(check_dir), **aurocs}
    problems = list(dict.fromkeys(p for entry in entries for p in parity_problems(entry, aurocs)))  # graphs of one engine share a report
    path = write_artifact(out or model_path, manifest, members)
    return ExportResult(path, entries, notes, aurocs, problems, float(manifest["postprocess"]["image_threshold"]))
