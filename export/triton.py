"""`edgead export --format triton`: a Triton Inference Server model repository for any detector.

Every repository serves one end-to-end model, NAME: uint8 RGB frames in (FRAMES, (H, W, 3) at the model's
frame size), and per frame the image score (SCORE, FP32 [1]), the verdict (ANOMALOUS, BOOL [1]) and the
anomaly map (ANOMALY_MAP, FP32 (H, W) at the size `edgead predict` computes it). Behind it:

- ensemble (a model with one graph on whole frames: PatchCore, patch-wise AE): NAME_<graph> (the engine:
  `tensorrt_plan` where the model holds a TensorRT engine of the precision, else `onnxruntime_onnx` with
  TensorRT / CUDA execution accelerators for GPUs) -> NAME_head (Python backend: edgead.runtime's head and maps);
- BLS (restoration, which orchestrates encoder, prior and decoder, and models that cut frames into patches or
  tiles): NAME is a Python-backend model running edgead's Predictor, whose engines are calls to NAME_<graph>;
- `python_only`: NAME alone, a Python-backend model running the whole deployed path with edgead.runtime
  (ONNX Runtime inside), for servers without the ONNX Runtime backend.

Python models read their arrays (memory bank, SVM, codebook) from the .edgead copied beside their model.py.
Every config.pbtxt is written from the manifest's graph description and checked against it again after writing
(with tritonclient's ModelConfig protobuf, which rejects unknown fields, where tritonclient is installed).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgead.artifact import Artifact, sha256_bytes
from edgead.errors import ArtifactError, ConfigError
from edgead.graphs import GraphSpec, TensorSpec, graph_specs, head_section
from edgead.runtime.predictor import cuts_patches, tiling_from

FRAMES, SCORE, ANOMALOUS, ANOMALY_MAP = "FRAMES", "SCORE", "ANOMALOUS", "ANOMALY_MAP"
MODEL_FILE = "model.edgead"
CLIENT_PARAMETER = "edgead_client"  # what a client needs: frame size, map size, threshold, calibration
TRITON_TYPES = {"uint8": "TYPE_UINT8", "int32": "TYPE_INT32", "int64": "TYPE_INT64", "float16": "TYPE_FP16", "float32": "TYPE_FP32", "bool": "TYPE_BOOL"}
PYTHON_MODEL = "from edgead.runtime.triton_python import TritonPythonModel  # noqa: F401 - edgead's Python-backend model\n"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class TritonOptions:
    """What `edgead export --format triton` writes: engine precision, batch, instances, layout."""

    precision: str = "fp32"
    max_batch: int = 8
    instances: int = 1
    python_only: bool = False
    name: str | None = None  # default: the model file's stem
    dynamic_batching: bool = True  # off: each request runs alone (to measure what the batcher brings)
    # graphs as Python-backend models running ONNX Runtime (the ensemble and BLS layouts on a server without the
    # ONNX Runtime backend, as the one bundled in nvidia-pytriton): for tests, not a CLI option
    graphs_in_python: bool = False

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "fp16", "int8"):
            raise ConfigError(f"--engine {self.precision!r}: choose fp32, fp16 or int8")
        if self.max_batch < 1:
            raise ConfigError(f"--max-batch {self.max_batch} must be at least 1")
        if self.instances < 1:
            raise ConfigError(f"--instances {self.instances} must be at least 1")
        if self.name is not None and not NAME_RE.match(self.name):
            raise ConfigError(f"--model-name {self.name!r}: use letters, digits, '_', '-' and '.', starting with a letter or digit")


@dataclass
class TritonResult:
    """The repository written: its models (name -> layout) and notes for the user."""

    repository: Path
    name: str
    layout: str  # "ensemble", "bls" or "python"
    models: dict[str, str] = field(default_factory=dict)  # model name -> "onnxruntime_onnx", "python", ...
    notes: list[str] = field(default_factory=list)


def model_name(artifact: Artifact, options: TritonOptions) -> str:
    if options.name:
        return options.name
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", artifact.path.stem).lstrip("._-") or "edgead"
    return stem


def layout_of(artifact: Artifact, options: TritonOptions) -> str:
    """ensemble for one graph on whole frames, bls for several graphs or frames cut into patches or tiles; python for --python-only."""
    if options.python_only:
        return "python"
    manifest = artifact.manifest
    if len(graph_specs(manifest, str(artifact.path))) > 1 or cuts_patches(manifest) or tiling_from(manifest, None, None):
        return "bls"
    return "ensemble"


def frame_dims(manifest: dict[str, Any]) -> list[int]:
    """FRAMES dims (no batch): the frame size a client resizes to; -1 (any size) for models that tile large frames."""
    if tiling_from(manifest, None, None) and not cuts_patches(manifest):
        return [-1, -1, 3]
    size = manifest["input"].get("frame_px") or manifest["input"]["size_px"]
    return [int(size[0]), int(size[1]), 3]


def map_dims(manifest: dict[str, Any]) -> list[int]:
    """ANOMALY_MAP dims (no batch): what Predictor.predict returns: the frame size of patch models, else the input size."""
    dims = frame_dims(manifest)
    return dims[:2]


def graph_engine(artifact: Artifact, graph: str, options: TritonOptions) -> tuple[dict[str, Any], str]:
    """The engine entry served for `graph` and its Triton platform: a TensorRT plan where there is one, else ONNX."""
    if not options.python_only and not options.graphs_in_python:
        plan = artifact.engine("tensorrt", options.precision, graph)
        if plan is not None:
            return plan, "tensorrt_plan"
    onnx = artifact.engine("onnxruntime", options.precision, graph)
    if onnx is None:
        have = ", ".join(sorted(f"{e.get('backend')}/{e.get('precision')}" for e in artifact.manifest["engines"] if e.get("graph") == graph)) or "none"
        raise ConfigError(
            f"{artifact.path} has no {options.precision} ONNX engine of graph {graph!r} (it has: {have}); "
            f"build one first with `edgead export --engine {options.precision} --format onnx`, then export to Triton again"
        )
    return onnx, "onnxruntime_onnx"


# ---------------------------------------------------------------- config.pbtxt text


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _tensor(name: str, dtype: str, dims: list[int]) -> str:
    return f"  {{ name: {_quote(name)} data_type: {TRITON_TYPES[dtype]} dims: [ {', '.join(str(d) for d in dims)} ] }}"


def tensor_dims(spec: TensorSpec, graph: str, source: str) -> list[int]:
    """A manifest tensor's dims without its leading "batch" axis (Triton's max_batch_size adds it)."""
    shape = list(spec.shape)
    if not shape or shape[0] != "batch" or "batch" in shape[1:]:
        raise ArtifactError(f"{source}: graph {graph!r} tensor {spec.name!r} has shape {shape}; Triton needs the batch axis first")
    return [int(d) for d in shape[1:]]


def _parameters(values: dict[str, str]) -> list[str]:
    return [f"parameters {{ key: {_quote(k)} value {{ string_value: {_quote(v)} }} }}" for k, v in values.items()]


def _io(inputs: list[str], outputs: list[str]) -> list[str]:
    return ["input [", ",\n".join(inputs), "]", "output [", ",\n".join(outputs), "]"]


def _scheduling(options: TritonOptions, kind: str) -> list[str]:
    batching = [f"dynamic_batching {{ max_queue_delay_microseconds: {1000 if options.max_batch > 1 else 0} }}"] if options.dynamic_batching else []
    return batching + [f"instance_group [ {{ count: {options.instances} kind: {kind} }} ]"]


def result_outputs(manifest: dict[str, Any]) -> list[str]:
    return [_tensor(SCORE, "float32", [1]), _tensor(ANOMALOUS, "bool", [1]), _tensor(ANOMALY_MAP, "float32", map_dims(manifest))]


def graph_config(name: str, spec: GraphSpec, platform: str, options: TritonOptions, source: str, parameters: dict[str, str]) -> str:
    """config.pbtxt of one exported graph: its real tensor names, dtypes and dims, batching, instances, accelerators."""
    inputs = [_tensor(t.name, t.dtype, tensor_dims(t, spec.name, source)) for t in spec.inputs]
    outputs = [_tensor(t.name, t.dtype, tensor_dims(t, spec.name, source)) for t in spec.outputs]
    lines = [f"name: {_quote(name)}", f"platform: {_quote(platform)}",
             f"default_model_filename: {_quote('model.plan' if platform == 'tensorrt_plan' else 'model.onnx')}"]
    lines += [f"max_batch_size: {options.max_batch}"] + _io(inputs, outputs)
    # TensorRT plans need the GPU; the CPU INT8 graph (uint8 activations) stays on the CPU; the rest where Triton finds best
    kind = "KIND_GPU" if platform == "tensorrt_plan" else "KIND_CPU" if options.precision == "int8" else "KIND_AUTO"
    lines += _scheduling(options, kind)
    if platform == "onnxruntime_onnx" and options.precision != "int8":
        mode = "FP16" if options.precision == "fp16" else "FP32"
        lines += [
            "optimization { execution_accelerators { gpu_execution_accelerator: [ {",
            '  name: "tensorrt"',
            f'  parameters {{ key: "precision_mode" value: "{mode}" }}',
            '  parameters { key: "max_workspace_size_bytes" value: "1073741824" }',
            '  parameters { key: "trt_engine_cache_enable" value: "1" }',
            '  parameters { key: "trt_engine_cache_path" value: "/tmp/edgead-triton-trt-cache" }',
            "} ] } }",
        ]
    return "\n".join(lines + _parameters(parameters)) + "\n"


def python_config(name: str, inputs: list[str], outputs: list[str], options: TritonOptions, parameters: dict[str, str], kind: str = "KIND_CPU") -> str:
    lines = [f"name: {_quote(name)}", 'backend: "python"', f"max_batch_size: {options.max_batch}"] + _io(inputs, outputs)
    lines += _scheduling(options, kind) + _parameters(parameters)
    return "\n".join(lines) + "\n"


def ensemble_config(name: str, graph: GraphSpec, graph_model: str, head_model: str, manifest: dict[str, Any],
                    options: TritonOptions, parameters: dict[str, str], source: str) -> str:
    (image,) = graph.inputs
    inputs = [_tensor(FRAMES, "uint8", tensor_dims(image, graph.name, source))]
    lines = [f"name: {_quote(name)}", 'platform: "ensemble"', f"max_batch_size: {options.max_batch}"] + _io(inputs, result_outputs(manifest))
    feature_map = " ".join(f"output_map {{ key: {_quote(t.name)} value: {_quote(t.name)} }}" for t in graph.outputs)
    head_inputs = " ".join(f"input_map {{ key: {_quote(t.name)} value: {_quote(t.name)} }}" for t in graph.outputs)
    head_outputs = " ".join(f"output_map {{ key: {_quote(t)} value: {_quote(t)} }}" for t in (SCORE, ANOMALOUS, ANOMALY_MAP))
    lines += [
        "ensemble_scheduling { step [",
        f"  {{ model_name: {_quote(graph_model)} model_version: -1 input_map {{ key: {_quote(image.name)} value: {_quote(FRAMES)} }} {feature_map} }},",
        f"  {{ model_name: {_quote(head_model)} model_version: -1 {head_inputs} {head_outputs} }}",
        "] }",
    ] + _parameters(parameters)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the repository


def client_info(artifact: Artifact, main_engine: dict[str, Any], layout: str, data: bytes) -> dict[str, Any]:
    """What `edgead run --triton` reads from the served model's config: sizes, threshold and calibration, provenance."""
    manifest = artifact.manifest
    engine = {k: main_engine[k] for k in ("backend", "precision", "graph", "threshold", "calibration", "threshold_source") if k in main_engine}
    return {
        "format": 1, "method": manifest["method"], "layout": layout, "frame_dims": frame_dims(manifest), "map_dims": map_dims(manifest),
        "postprocess": manifest["postprocess"], "engine": engine, "model_sha256": sha256_bytes(data), "model_file": artifact.path.name,
    }


def _engine_file(artifact: Artifact, entry: dict[str, Any], platform: str) -> tuple[str, bytes]:
    return ("model.plan" if platform == "tensorrt_plan" else "model.onnx"), artifact.member(entry["member"])


def write_triton_repository(artifact: Artifact, out: Path, options: TritonOptions) -> TritonResult:
    """Write (or replace) NAME and its parts in the repository `out`; other models there are left as they are."""
    source = str(artifact.path)
    manifest = artifact.manifest
    specs = graph_specs(manifest, source)
    main_graph = head_section(manifest, source)["graph"]
    name = model_name(artifact, options)
    layout = layout_of(artifact, options)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; a Triton model repository is a folder: give a folder (created if needed)")
    engines = {graph: graph_engine(artifact, graph, options) for graph in specs}
    from edgead.export.triton_check import check_repository, require_checker

    require_checker()  # before anything is written: the repository is checked once it is
    result = TritonResult(out, name, layout)
    common = {"edgead_model": MODEL_FILE, "edgead_part_of": name, "edgead_precision": options.precision,
              "edgead_dynamic_batching": "on" if options.dynamic_batching else "off"}
    model_bytes = artifact.path.read_bytes()  # the Python models read the model file itself, checked as any .edgead
    info = client_info(artifact, engines[main_graph][0], layout, model_bytes)
    client = {CLIENT_PARAMETER: json.dumps(info, sort_keys=True, separators=(",", ":"))}
    folders: dict[str, dict[str, bytes]] = {}  # model folder -> relative path -> bytes

    def python_model(folder_name: str, config: str) -> None:
        folders[folder_name] = {"config.pbtxt": config.encode(), "1/model.py": PYTHON_MODEL.encode(), f"1/{MODEL_FILE}": model_bytes}

    frames = [_tensor(FRAMES, "uint8", frame_dims(manifest))]
    if layout == "python":
        kind = "KIND_GPU" if options.precision == "fp16" else "KIND_CPU"  # the FP16 graph is for CUDA devices
        python_model(name, python_config(name, frames, result_outputs(manifest), options, {**common, **client, "edgead_role": "pipeline"}, kind))
        result.models[name] = "python (the whole deployed path, ONNX Runtime inside)"
    graph_models = {}
    if layout != "python":
        for graph, spec in specs.items():
            entry, platform = engines[graph]
            graph_name = f"{name}_{graph}"
            graph_models[graph] = graph_name
            if options.graphs_in_python:
                inputs = [_tensor(t.name, t.dtype, tensor_dims(t, graph, source)) for t in spec.inputs]
                outputs = [_tensor(t.name, t.dtype, tensor_dims(t, graph, source)) for t in spec.outputs]
                python_model(graph_name, python_config(graph_name, inputs, outputs, options, {**common, "edgead_role": "graph", "edgead_graph": graph}))
                result.models[graph_name] = "python (ONNX Runtime)"
                continue
            filename, data = _engine_file(artifact, entry, platform)
            folders[graph_name] = {"config.pbtxt": graph_config(graph_name, spec, platform, options, source, {"edgead_part_of": name, "edgead_dynamic_batching": common["edgead_dynamic_batching"]}).encode(), f"1/{filename}": data}
            result.models[graph_name] = platform
            if platform == "tensorrt_plan":
                result.notes.append(
                    f"{graph_name}: the TensorRT engine was built with TensorRT {entry.get('tensorrt_version', '?')} for "
                    f"sm_{str(entry.get('compute_capability', '?')).replace('.', '')}: serve it with a Triton release of that TensorRT on that GPU"
                )
    if layout == "ensemble":
        spec = specs[main_graph]
        head_name = f"{name}_head"
        head_inputs = [_tensor(t.name, t.dtype, tensor_dims(t, main_graph, source)) for t in spec.outputs]
        python_model(head_name, python_config(head_name, head_inputs, result_outputs(manifest), options, {**common, "edgead_role": "head"}))
        result.models[head_name] = "python (edgead scoring head and maps)"
        folders[name] = {"1/": b"", "config.pbtxt": ensemble_config(name, spec, graph_models[main_graph], head_name, manifest, options, {**common, **client}, source).encode()}
        result.models[name] = "ensemble"
    elif layout == "bls":
        bls = {**common, **client, "edgead_role": "bls", "edgead_graph_models": json.dumps(graph_models, sort_keys=True)}
        python_model(name, python_config(name, frames, result_outputs(manifest), options, bls))
        result.models[name] = "python (BLS: edgead's Predictor calling " + ", ".join(graph_models.values()) + ")"
    _replace_models(out, name, folders)
    check_repository(out, artifact, name)
    return result


def _replace_models(out: Path, name: str, folders: dict[str, dict[str, bytes]]) -> None:
    """Write the model folders beside the repository, then swap them in; earlier parts of NAME that are gone are removed."""
    out.mkdir(parents=True, exist_ok=True)
    stale = [p for p in out.iterdir() if p.is_dir() and p.name not in folders and _part_of(p) == name]
    with tempfile.TemporaryDirectory(prefix=".edgead-", dir=out) as staging:
        for folder, files in folders.items():
            for relative, data in files.items():
                path = Path(staging) / folder / relative
                if relative.endswith("/"):  # a version folder with nothing in it: an ensemble's
                    path.mkdir(parents=True, exist_ok=True)
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
        for folder in folders:
            target = out / folder
            if target.exists():
                shutil.rmtree(target)
            (Path(staging) / folder).rename(target)
    for path in stale:
        shutil.rmtree(path)


def _part_of(folder: Path) -> str | None:
    """The NAME a model folder of an earlier export belongs to (its edgead_part_of parameter), or None."""
    try:
        text = (folder / "config.pbtxt").read_text(errors="replace")
    except OSError:
        return None
    found = re.search(r'key: "edgead_part_of" value \{ string_value: "([^"]*)" \}', text)
    return found.group(1) if found else None
