"""Parity of exported engines against the eager FP32 model: features, image scores, and AUROC on test data."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgead.artifact import Artifact
from edgead.runtime.backends.base import Backend
from edgead.runtime.datasets import Dataset
from edgead.runtime.evaluate import evaluate
from edgead.runtime.predictor import Predictor

# image AUROC an FP16/INT8 engine may lose against FP32 before the export warns loudly
AUROC_TOLERANCE = 0.005
FP32_REL_TOLERANCE = 1e-4


class EagerBackend(Backend):
    """The training code's feature model behind the runtime's backend interface: the reference."""

    name = "eager-torch"

    def __init__(self, artifact: Artifact, model: Any) -> None:
        super().__init__(artifact, {"precision": "fp32"}, "cpu")
        self.model = model.eval()

    def infer(self, images: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.model(torch.from_numpy(np.ascontiguousarray(images))).numpy()


def reference_backend(artifact: Artifact, model: Any | None) -> Backend | str:
    """The eager FP32 model where torch is here; else the artifact's ONNX FP32 engine (checked against it at training)."""
    return EagerBackend(artifact, model) if model is not None else "onnxruntime"


def reference_name(model: Any | None) -> str:
    return "eager/fp32" if model is not None else "onnx/fp32 (reference: torch not installed)"


def parity_device(backend: str, precision: str) -> str:
    """Where an engine is checked: TensorRT on the GPU; FP16 TorchScript on CUDA where present, else the CPU."""
    if backend == "tensorrt":
        return "cuda"
    if backend == "torchscript" and precision == "fp16":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cpu"


def parity_report(artifact: Artifact, model: Any | None, images: np.ndarray, backend: str, precision: str) -> dict[str, Any]:
    """Largest feature and image-score differences of one engine against the FP32 reference.

    images: (N, H, W, 3) uint8 at the input size. The engine runs through the runtime, as deployed.
    """
    device = parity_device(backend, precision)
    # parity images are at the input size already: whole-frame scoring, whatever the model's tiling
    with Predictor(artifact, reference_backend(artifact, model), precision="fp32", tiling=False) as reference:
        eager = reference.infer(images)
        eager_scores, _ = reference.maps(reference.knn(eager))  # scored from the same features: one inference
    with Predictor(artifact, backend, device, precision, tiling=False) as engine:
        got = engine.infer(images).astype(np.float32)
        got_scores, _ = engine.maps(engine.knn(got))
    feature_diff = float(np.abs(got - eager).max())
    score_diff = float(np.abs(got_scores - eager_scores).max())
    return {
        "device": device,
        "reference": reference_name(model),
        "images": int(images.shape[0]),
        "max_abs_feature_diff": feature_diff,
        "max_rel_feature_diff": feature_diff / max(float(np.abs(eager).max()), 1e-12),
        "max_abs_score_diff": score_diff,
        "max_rel_score_diff": score_diff / max(float(np.abs(eager_scores).max()), 1e-12),
    }


def auroc_report(artifact: Artifact, model: Any | None, dataset: Dataset, engines: list[dict[str, Any]]) -> dict[str, float]:
    """Image AUROC on `dataset` of the FP32 reference (key 'eager/fp32') and of each engine ('format/precision')."""
    with Predictor(artifact, reference_backend(artifact, model), precision="fp32") as reference:
        result = {"eager/fp32": evaluate(reference, dataset).metrics["image_auroc"]}
    for entry in engines:
        device = parity_device(entry["backend"], entry["precision"])
        with Predictor(artifact, entry["backend"], device, entry["precision"]) as engine:
            result[f"{entry['format']}/{entry['precision']}"] = evaluate(engine, dataset).metrics["image_auroc"]
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
