"""Parity of exported engines against the eager FP32 modules: every graph's outputs, image scores, and AUROC on test data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from edgead.artifact import Artifact
from edgead.runtime.backends.base import Backend
from edgead.runtime.datasets import Dataset
from edgead.runtime.evaluate import evaluate
from edgead.runtime.predictor import Predictor, as_outputs, cuts_patches

# image AUROC an FP16/INT8 engine may lose against FP32 before the export warns loudly
AUROC_TOLERANCE = 0.005
FP32_REL_TOLERANCE = 1e-4


class Recording(Backend):
    """Wraps a backend and keeps every (input, outputs) pair it saw, so that another engine can be fed the same inputs."""

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner.artifact, inner.engine, inner.device)
        self.inner, self.name = inner, inner.name
        self.calls: list[tuple[np.ndarray, Any]] = []

    def infer(self, inputs: np.ndarray):
        outputs = self.inner.infer(inputs)
        self.calls.append((np.array(inputs, copy=True), outputs))
        return outputs

    def close(self) -> None:
        self.inner.close()
        super().close()


def reference_backends(artifact: Artifact, graphs: Mapping[str, Any] | None) -> dict[str, Backend] | str:
    """The eager FP32 modules where torch is here; else the artifact's ONNX FP32 engines (checked against them at training)."""
    if graphs is None:
        return "onnxruntime"
    from edgead.kit.eager import eager_backends

    return eager_backends(artifact, graphs)


def reference_name(graphs: Mapping[str, Any] | None) -> str:
    return "eager/fp32" if graphs is not None else "onnx/fp32 (reference: torch not installed)"


def parity_device(backend: str, precision: str) -> str:
    """Where an engine is checked: TensorRT on the GPU; FP16 TorchScript on CUDA where present, else the CPU."""
    if backend == "tensorrt":
        return "cuda"
    if backend == "torchscript" and precision == "fp16":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cpu"


def output_differences(reference: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> dict[str, float]:
    """Largest absolute and relative difference over float outputs; the fraction of differing values of integer outputs."""
    result = {"max_abs_output_diff": 0.0, "max_rel_output_diff": 0.0}
    for name, want in reference.items():
        have = got[name]
        if np.issubdtype(want.dtype, np.integer):
            result[f"{name}_mismatch_fraction"] = float(np.mean(have != want))
            continue
        diff = float(np.abs(have.astype(np.float32) - want).max())
        result["max_abs_output_diff"] = max(result["max_abs_output_diff"], diff)
        result["max_rel_output_diff"] = max(result["max_rel_output_diff"], diff / max(float(np.abs(want).max()), 1e-12))
    return result


def open_engines(artifact: Artifact, backend: str, device: str, precision: str) -> dict[str, Backend]:
    """Every graph's engine on `backend` in `precision`, opened (closed again if one fails).

    Trusted to run code: export and training check the engines they have just built themselves (an entry of the
    same graph, backend and precision replaces the model's old one), not engines that came with the file.
    """
    from contextlib import ExitStack

    from edgead.runtime.backends.base import open_backend

    with ExitStack() as opened:
        backends = {}
        for name in artifact.manifest["graphs"]:
            backends[name] = opened.enter_context(open_backend(artifact, backend, device, precision, graph=name, trust_code=True))
        opened.pop_all()
    return backends


def parity_report(artifact: Artifact, graphs: Mapping[str, Any] | None, images: np.ndarray, backend: str, precision: str) -> dict[str, Any]:
    """Largest output and image-score differences of one backend/precision's engines against the FP32 reference.

    images: (N, H, W, 3) uint8 at the input size, scored whole (no tiling) through the runtime, as deployed;
    for patch models, frames cut into patches as deployed.
    Each graph's engine is fed the very inputs its reference module received, so that differences
    upstream do not show up as differences of a later graph. The main graph's differences are at the
    top level, every graph's under "graphs".
    """
    device = parity_device(backend, precision)
    reference_side = reference_backends(artifact, graphs)
    if isinstance(reference_side, str):
        reference_side = open_engines(artifact, reference_side, "cpu", "fp32")
    reference_side = {name: Recording(b) for name, b in reference_side.items()}
    tiling = cuts_patches(artifact.manifest)  # patch models carry frames, cut into patches as deployed
    with Predictor(artifact, reference_side, tiling=tiling) as reference:
        inputs, batch = reference.sample_batch(images)
        eager_scores, _ = reference.maps(reference.head(reference.infer(inputs)), batch)
    engine_side = {name: Recording(b) for name, b in open_engines(artifact, backend, device, precision).items()}
    per_graph: dict[str, dict[str, float]] = {}
    with Predictor(artifact, engine_side, device, tiling=tiling) as engine:
        got_scores, _ = engine.maps(engine.head(engine.infer(inputs)), batch)  # the main graph sees the reference's inputs
        main_outputs = _joined([out for _, out in reference_side[engine.main_graph].calls], engine.graphs[engine.main_graph].output_names)
        for name, theirs in reference_side.items():
            names = engine.graphs[name].output_names
            if not theirs.calls:  # the head did not need this graph on these images: check it on inputs like its own
                theirs.infer(_stand_in_input(engine.graphs[name], main_outputs))
            if name == engine.main_graph:
                mine = [out for _, out in engine_side[name].calls]
            else:
                mine = [engine_side[name].inner.infer(x) for x, _ in theirs.calls]
            per_graph[name] = output_differences(_joined([out for _, out in theirs.calls], names), _joined(mine, names))
        main = engine.main_graph
    score_diff = float(np.abs(got_scores - eager_scores).max())
    return {
        "device": device,
        "reference": reference_name(graphs),
        "images": int(images.shape[0]),
        **per_graph[main],
        "max_abs_score_diff": score_diff,
        "max_rel_score_diff": score_diff / max(float(np.abs(eager_scores).max()), 1e-12),
        "graphs": per_graph,
    }


def _stand_in_input(spec: Any, main_outputs: dict[str, np.ndarray]) -> np.ndarray:
    """An input for a graph the head never called: the main graph's output of the same name, shape and dtype, else zeros."""
    (wanted,) = spec.inputs
    have = main_outputs.get(wanted.name)
    example = wanted.example(1)
    if have is not None and have.dtype == example.dtype and have.shape[1:] == example.shape[1:]:
        return have
    return wanted.example(2)


def _joined(results: list[Any], names: list[str]) -> dict[str, np.ndarray]:
    """Backend results of several calls -> each output concatenated over the calls, by name."""
    outputs = [as_outputs(result, names) for result in results]
    return {n: np.concatenate([o[n] for o in outputs]) for n in names}


def auroc_report(artifact: Artifact, graphs: Mapping[str, Any] | None, dataset: Dataset, engines: list[dict[str, Any]]) -> dict[str, float]:
    """Image AUROC on `dataset` of the FP32 reference (key 'eager/fp32') and of each backend/precision ('format/precision')."""
    with Predictor(artifact, reference_backends(artifact, graphs), precision="fp32") as reference:
        result = {"eager/fp32": evaluate(reference, dataset).metrics["image_auroc"]}
    for entry in engines:
        key = f"{entry['format']}/{entry['precision']}"
        if key in result:  # one entry per graph: the whole pipeline is measured once per backend and precision
            continue
        device = parity_device(entry["backend"], entry["precision"])
        with Predictor(artifact, entry["backend"], device, entry["precision"], trust_code=True) as engine:  # engines built here
            result[key] = evaluate(engine, dataset).metrics["image_auroc"]
    return result


def parity_problems(entry: dict[str, Any], aurocs: dict[str, float] | None = None) -> list[str]:
    """What a user must be told loudly: FP32 engines off by more than 1e-4, lower precisions losing AUROC."""
    problems = []
    parity = entry.get("parity", {})
    name = f"{entry['format']}/{entry['precision']}"
    if entry["precision"] == "fp32" and parity.get("max_rel_score_diff", 0.0) > FP32_REL_TOLERANCE:
        problems.append(f"{name}: image scores differ from the eager model by {parity['max_rel_score_diff']:.2e} (relative), more than {FP32_REL_TOLERANCE:g}")
    if aurocs and name in aurocs and entry["precision"] != "fp32":
        drop = aurocs["eager/fp32"] - aurocs[name]
        if drop > AUROC_TOLERANCE:
            problems.append(f"{name}: image AUROC {aurocs[name]:.4f} is {drop:.4f} below FP32 ({aurocs['eager/fp32']:.4f}), more than {AUROC_TOLERANCE}")
    return problems
