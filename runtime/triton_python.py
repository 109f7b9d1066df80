"""edgead's Triton Python-backend model: every model.py of an `edgead export --format triton` repository imports this.

Its role comes from the config's `edgead_role` parameter:

- `pipeline` (--python-only): frames -> edgead's Predictor on ONNX Runtime -> score, verdict, map;
- `bls`: the same Predictor, whose engines are BLS calls to the repository's graph models (restoration's
  encoder, prior and decoder; models that cut frames into patches or tiles);
- `head` (in an ensemble): the main graph's outputs -> edgead's scoring head and maps;
- `graph`: one graph through ONNX Runtime (graph models on a server without the ONNX Runtime backend).

Each model reads the .edgead beside it. All requests that the dynamic batcher hands to one `execute` are
scored as one batch; a batch that fails is scored again request by request, so that one bad request gets
its own error and the others their results. Tensors cross the backend through DLPack, not `as_numpy`: the
Python backend of Triton 2.51 (nvidia-pytriton 0.7.0) hands numpy 2 arrays of zeros through `as_numpy`.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgead.artifact import Artifact, read_artifact
from edgead.errors import BackendError, DataError, EdgeADError
from edgead.graphs import graph_specs, head_section
from edgead.runtime.backends.base import Backend, open_backend
from edgead.runtime.calibration import choose_threshold
from edgead.runtime.heads import open_head
from edgead.runtime.postprocess import anomaly_maps, image_scores
from edgead.runtime.predictor import Predictor

RESULTS = ("SCORE", "ANOMALOUS", "ANOMALY_MAP")


def served_engine(artifact: Artifact, graph: str, precision: str) -> dict[str, Any]:
    """The manifest entry of the engine the repository serves for `graph` (its threshold is the one used)."""
    for backend in ("tensorrt", "onnxruntime"):
        entry = artifact.engine(backend, precision, graph)
        if entry is not None:
            return entry
    raise BackendError(f"{artifact.path} has no {precision} engine of graph {graph!r}")


def results(scores: np.ndarray, threshold: float, maps: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """(N,) scores and N maps -> the end-to-end outputs: SCORE (N, 1) fp32, ANOMALOUS (N, 1) bool, ANOMALY_MAP (N, H, W) fp32."""
    scores = np.asarray(scores, dtype=np.float32).reshape(-1, 1)
    return {"SCORE": scores, "ANOMALOUS": scores > threshold, "ANOMALY_MAP": np.stack([np.asarray(m, np.float32) for m in maps])}


class PipelineModel:
    """frames (N, H, W, 3) uint8 -> results, through a Predictor (ONNX Runtime, or BLS backends)."""

    inputs = ("FRAMES",)

    def __init__(self, artifact: Artifact, precision: str, max_batch: int, backends: Mapping[str, Backend] | None = None, device: str = "cpu") -> None:
        backend: Any = dict(backends) if backends else "onnxruntime"
        self.predictor = Predictor(artifact, backend=backend, device=device, precision=precision, max_batch=max_batch)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        predictions = self.predictor.predict(list(inputs["FRAMES"]))
        return results(np.array([p.score for p in predictions]), self.predictor.threshold, [p.anomaly_map for p in predictions])

    def close(self) -> None:
        self.predictor.close()


class HeadModel:
    """The main graph's outputs by name, each (N, ...) -> results: the scoring head, then maps and image scores as Predictor.maps."""

    def __init__(self, artifact: Artifact, precision: str) -> None:
        manifest = artifact.manifest
        section = head_section(manifest, str(artifact.path))
        self.inputs = tuple(graph_specs(manifest, str(artifact.path))[section["graph"]].output_names)
        self.head = open_head(artifact, "cpu", {})
        post = manifest["postprocess"]
        self.size_px = tuple(manifest["input"]["size_px"])
        self.blur_sigma_px = float(post["blur_sigma_px"])
        self.upsample = post.get("upsample", "bilinear")
        self.quantile = post.get("score_quantile")
        self.threshold = choose_threshold(post, served_engine(artifact, section["graph"], precision))[0].value

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        maps = anomaly_maps(self.head.score(inputs), self.size_px, self.blur_sigma_px, self.upsample)
        return results(image_scores(list(maps), self.quantile), self.threshold, list(maps))

    def close(self) -> None:
        self.head.close()


class GraphModel:
    """One graph's inputs -> its outputs, through ONNX Runtime (for servers without the ONNX Runtime backend)."""

    def __init__(self, artifact: Artifact, graph: str, precision: str) -> None:
        spec = graph_specs(artifact.manifest, str(artifact.path))[graph]
        self.inputs, self.outputs = tuple(spec.input_names), tuple(spec.output_names)
        self.backend = open_backend(artifact, "onnxruntime", "cpu", precision, graph=graph)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.backend.infer(*[inputs[name] for name in self.inputs])
        arrays = (out,) if isinstance(out, np.ndarray) else tuple(out)
        return dict(zip(self.outputs, arrays))

    def close(self) -> None:
        self.backend.close()


class BLSBackend(Backend):
    """A graph served by another model of the repository, called through Triton's BLS API (one request per batch)."""

    name = "triton-bls"

    def __init__(self, artifact: Artifact, engine: dict[str, Any], graph: str, model: str, pb: Any, max_batch: int) -> None:
        super().__init__(artifact, engine, "cpu")
        spec = graph_specs(artifact.manifest, str(artifact.path))[graph]
        self.spec, self.model, self.pb, self.max_batch = spec, model, pb, max_batch
        self.dtypes = [np.dtype(t.dtype) for t in spec.inputs]

    def infer(self, *inputs: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        """Inputs in the graph's order, (N, ...) each -> its outputs; in requests of at most the graph model's max batch
        (a head may hand more at once: the restoration head decodes originals and restorations together)."""
        if len(inputs) != len(self.spec.inputs):
            raise DataError(f"{self.model} takes {len(self.spec.inputs)} inputs, not {len(inputs)}")
        arrays = [np.ascontiguousarray(np.asarray(a), dtype=d) for a, d in zip(inputs, self.dtypes)]
        parts = [self._request([a[s : s + self.max_batch] for a in arrays]) for s in range(0, len(arrays[0]), self.max_batch)]
        outputs = [np.concatenate([p[i] for p in parts]) if len(parts) > 1 else parts[0][i] for i in range(len(self.spec.outputs))]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def _request(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        tensors = [self.pb.Tensor.from_dlpack(t.name, np.ascontiguousarray(a)) for t, a in zip(self.spec.inputs, arrays)]
        request = self.pb.InferenceRequest(model_name=self.model, requested_output_names=self.spec.output_names, inputs=tensors)
        response = request.exec()
        if response.has_error():
            raise BackendError(f"{self.model}: {response.error().message()}")
        return [np.array(np.from_dlpack(self.pb.get_output_tensor_by_name(response, name))) for name in self.spec.output_names]

    def describe(self) -> str:
        return f"{self.model} (Triton BLS)"


def open_served(params: Mapping[str, str], artifact: Artifact, max_batch: int, pb: Any, device: str = "cpu") -> Any:
    """The served model of a role (see the module docstring)."""
    role, precision = params["edgead_role"], params["edgead_precision"]
    if role == "pipeline":
        return PipelineModel(artifact, precision, max_batch, device=device)
    if role == "head":
        return HeadModel(artifact, precision)
    if role == "graph":
        return GraphModel(artifact, params["edgead_graph"], precision)
    if role == "bls":
        models = json.loads(params["edgead_graph_models"])
        backends = {graph: BLSBackend(artifact, served_engine(artifact, graph, precision), graph, model, pb, max_batch) for graph, model in models.items()}
        return PipelineModel(artifact, precision, max_batch, backends)
    raise BackendError(f"edgead_role {role!r} is not one this edgead serves (pipeline, bls, head, graph): re-export the repository")


def run_batched(model: Any, requests: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray] | Exception]:
    """Each request's outputs (or its error): all requests run as one batch; if that fails, one by one."""
    if not requests:
        return []
    sizes = [len(r[model.inputs[0]]) for r in requests]
    if len({tuple(r[name].shape[1:]) for r in requests for name in model.inputs[:1]}) > 1:  # frames of several sizes (tiling models)
        return [outcome for r in requests for outcome in run_batched(model, [r])]
    try:
        merged = requests[0] if len(requests) == 1 else {name: np.concatenate([r[name] for r in requests]) for name in model.inputs}
        outputs = model.run(merged)
        bounds = np.cumsum([0] + sizes)
        return [{k: v[a:b] for k, v in outputs.items()} for a, b in zip(bounds, bounds[1:])]
    except Exception as exc:  # noqa: BLE001 - reported to the client, the server stays up
        if len(requests) == 1:
            return [exc]
    out: list[dict[str, np.ndarray] | Exception] = []
    for request in requests:
        out += run_batched(model, [request])
    return out


def one_line(exc: Exception) -> str:
    """An error as the client sees it: one line; edgead's own errors as they are, others with their type."""
    text = " ".join(str(exc).split())
    return text if isinstance(exc, EdgeADError) and text else f"{type(exc).__name__}: {text}"


class TritonPythonModel:
    """The Python backend's entry points: initialize, execute (a list of requests), finalize."""

    def initialize(self, args: dict[str, str]) -> None:
        self.pb = importlib.import_module("triton_python_backend_utils")  # exists only inside the Python backend's stub
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        folder = Path(args["model_repository"]) / str(args["model_version"])
        artifact = read_artifact(folder / params["edgead_model"])
        device = f"cuda:{args.get('model_instance_device_id', 0)}" if args.get("model_instance_kind") == "GPU" else "cpu"
        self.outputs = [o["name"] for o in config["output"]]
        self.model = open_served(params, artifact, int(config.get("max_batch_size") or 8), self.pb, device)

    def execute(self, requests: list[Any]) -> list[Any]:
        pb = self.pb
        inputs = [{name: np.array(np.from_dlpack(pb.get_input_tensor_by_name(r, name))) for name in self.model.inputs} for r in requests]
        responses = []
        for outcome in run_batched(self.model, inputs):
            if isinstance(outcome, Exception):
                responses.append(pb.InferenceResponse(output_tensors=[], error=pb.TritonError(one_line(outcome))))
                continue
            tensors = [pb.Tensor.from_dlpack(name, np.ascontiguousarray(outcome[name])) for name in self.outputs]
            responses.append(pb.InferenceResponse(output_tensors=tensors))
        return responses

    def finalize(self) -> None:
        self.model.close()
