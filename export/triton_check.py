"""Checks a written Triton model repository against the manifest it came from.

Each config.pbtxt is parsed into tritonclient's ModelConfig protobuf (text_format rejects unknown fields and
wrong types, so a config that Triton would refuse fails here, also for backends this machine lacks); then the
graph models' tensor names, dtypes and dims are compared with the manifest's graph description, every model
with the batch size and batching, the ensemble's steps with the models they call, and the model files with
what the config names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgead.artifact import Artifact
from edgead.errors import ArtifactError, DependencyError
from edgead.graphs import graph_specs

TYPES = {"uint8": "TYPE_UINT8", "int32": "TYPE_INT32", "int64": "TYPE_INT64", "float16": "TYPE_FP16", "float32": "TYPE_FP32", "bool": "TYPE_BOOL"}


def require_checker() -> None:
    """The ModelConfig protobuf of tritonclient, or a DependencyError that says how to install it."""
    try:
        from google.protobuf import text_format  # noqa: F401
        from tritonclient.grpc import model_config_pb2  # noqa: F401
    except ImportError:
        raise DependencyError("export --format triton checks every config.pbtxt with tritonclient's ModelConfig: pip install 'edgead[triton]'") from None


def parse_config(path: Path) -> Any:
    """config.pbtxt -> tritonclient's ModelConfig message; a one-line ArtifactError where Triton would refuse it."""
    require_checker()
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    try:
        return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise ArtifactError(f"{path} is not a valid Triton model configuration: {exc}") from None


def _tensors(config: Any, side: str) -> dict[str, tuple[str, list[int]]]:
    from tritonclient.grpc import model_config_pb2

    return {t.name: (model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in getattr(config, side)}


def _expect(condition: bool, path: Path, what: str) -> None:
    if not condition:
        raise ArtifactError(f"{path}: {what}")


def check_repository(repository: Path, artifact: Artifact, name: str) -> dict[str, Any]:
    """Parse and check NAME and every model it calls; returns the parsed configs by model name."""
    specs = graph_specs(artifact.manifest, str(artifact.path))
    top_path = repository / name / "config.pbtxt"
    _expect(top_path.is_file(), top_path, "missing: the repository has no end-to-end model of that name")
    top = parse_config(top_path)
    configs = {name: top}
    params = {k: v.string_value for k, v in top.parameters.items()}
    client = json.loads(params["edgead_client"])
    frame_dims, map_dims = client["frame_dims"], client["map_dims"]
    _expect(_tensors(top, "input") == {"FRAMES": ("TYPE_UINT8", frame_dims)}, top_path, f"input is not FRAMES uint8 {frame_dims}")
    _expect(_tensors(top, "output") == {"SCORE": ("TYPE_FP32", [1]), "ANOMALOUS": ("TYPE_BOOL", [1]), "ANOMALY_MAP": ("TYPE_FP32", map_dims)},
            top_path, f"outputs are not SCORE [1], ANOMALOUS [1], ANOMALY_MAP {map_dims}")
    batch = top.max_batch_size
    _expect(batch >= 1, top_path, "max_batch_size must be at least 1")
    called = list(json.loads(params.get("edgead_graph_models", "{}")).values())
    if top.platform == "ensemble":
        called = [step.model_name for step in top.ensemble_scheduling.step]
    for model in called:
        path = repository / model / "config.pbtxt"
        _expect(path.is_file(), top_path, f"calls model {model!r}, which is not in the repository")
        configs[model] = parse_config(path)
    for model, config in configs.items():
        path = repository / model / "config.pbtxt"
        _expect(config.name == model, path, f"name {config.name!r} is not its folder's name {model!r}")
        _expect(config.max_batch_size == batch, path, f"max_batch_size {config.max_batch_size}, the end-to-end model has {batch}")
        if config.platform != "ensemble":
            batching = params.get("edgead_dynamic_batching", "on") == "on"
            _expect(config.HasField("dynamic_batching") == batching, path, f"dynamic_batching should be {'on' if batching else 'off'}")
            _expect(len(config.instance_group) == 1 and config.instance_group[0].count >= 1, path, "needs one instance_group with count >= 1")
        role = {k: v.string_value for k, v in config.parameters.items()}
        graph = role.get("edgead_graph") or _graph_of(model, name, specs)
        if graph is not None:
            _check_graph(config, specs[graph], path)
        if role.get("edgead_role") == "head":  # takes what the main graph gives
            main = specs[artifact.manifest["head"]["graph"]]
            want = {t.name: (TYPES[t.dtype], [int(d) for d in t.shape[1:]]) for t in main.outputs}
            _expect(_tensors(config, "input") == want, path, f"inputs differ from the outputs of graph {main.name!r}: {want}")
        _check_files(repository / model, config, path)  # after the manifest: a config off the manifest is named as such
    if top.platform == "ensemble":
        _check_ensemble(top, configs, top_path)
    return configs


def _graph_of(model: str, name: str, specs: dict) -> str | None:
    graph = model[len(name) + 1 :] if model.startswith(name + "_") else None
    return graph if graph in specs else None


def _check_graph(config: Any, spec: Any, path: Path) -> None:
    for side, tensors in (("input", spec.inputs), ("output", spec.outputs)):
        want = {t.name: (TYPES[t.dtype], [int(d) for d in t.shape[1:]]) for t in tensors}
        have = _tensors(config, side)
        _expect(have == want, path, f"{side}s {have} differ from the manifest's graph {spec.name!r}: {want}")
        _expect([t.name for t in getattr(config, side)] == [t.name for t in tensors], path, f"{side} order differs from the graph's")


def _check_files(folder: Path, config: Any, path: Path) -> None:
    if config.platform == "ensemble":
        _expect((folder / "1").is_dir(), path, "has no version folder 1/ (Triton loads no ensemble without one)")
        return
    if config.backend == "python":
        for needed in ("1/model.py", "1/model.edgead"):
            _expect((folder / needed).is_file(), path, f"{needed} is missing")
        return
    filename = config.default_model_filename or ("model.plan" if config.platform == "tensorrt_plan" else "model.onnx")
    _expect((folder / "1" / filename).is_file(), path, f"1/{filename} is missing")
    if config.platform == "onnxruntime_onnx":
        _check_onnx(folder / "1" / filename, config, path)


ONNX_TYPES = {1: "TYPE_FP32", 2: "TYPE_UINT8", 6: "TYPE_INT32", 7: "TYPE_INT64", 10: "TYPE_FP16", 9: "TYPE_BOOL"}


def _check_onnx(onnx_path: Path, config: Any, path: Path) -> None:
    """The ONNX graph's own inputs and outputs (names, element types, dims after the batch axis) against the config."""
    try:
        import onnx
    except ImportError:  # the configs are still checked against the manifest; the graph file is checked where onnx is
        return
    graph = onnx.load_model_from_string(onnx_path.read_bytes()).graph
    initializers = {i.name for i in graph.initializer}
    for side, values in (("input", [v for v in graph.input if v.name not in initializers]), ("output", list(graph.output))):
        have = {}
        for value in values:
            tensor = value.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
            have[value.name] = (ONNX_TYPES.get(tensor.elem_type, f"onnx type {tensor.elem_type}"), dims[1:])
        want = _tensors(config, side)
        for name, (dtype, dims) in want.items():
            _expect(name in have, path, f"{side} {name!r} is not a {side} of {onnx_path.name} (it has {sorted(have)})")
            got_type, got_dims = have[name]
            _expect(got_type == dtype, path, f"{side} {name!r} is {dtype}, {onnx_path.name} has {got_type}")
            _expect(len(got_dims) == len(dims) and all(g in (-1, d) for g, d in zip(got_dims, dims)), path,
                    f"{side} {name!r} has dims {dims}, {onnx_path.name} has {got_dims} after the batch axis")


def _check_ensemble(top: Any, configs: dict[str, Any], path: Path) -> None:
    available = _tensors(top, "input")  # tensor name -> (type, dims), as the steps make them
    for step in top.ensemble_scheduling.step:
        inner = configs[step.model_name]
        inputs, outputs = _tensors(inner, "input"), _tensors(inner, "output")
        _expect(set(step.input_map) == set(inputs), path, f"step {step.model_name} feeds {sorted(step.input_map)}, the model takes {sorted(inputs)}")
        for key, value in step.input_map.items():
            _expect(value in available, path, f"step {step.model_name} reads {value!r}, which no earlier step made")
            _expect(available[value] == inputs[key], path, f"step {step.model_name}: {value!r} is {available[value]}, its input {key!r} takes {inputs[key]}")
        _expect(set(step.output_map) <= set(outputs), path, f"step {step.model_name} maps outputs the model does not have")
        available.update({value: outputs[key] for key, value in step.output_map.items()})
    for name, tensor in _tensors(top, "output").items():
        _expect(available.get(name) == tensor, path, f"ensemble output {name!r} {tensor} is made by no step as such")
