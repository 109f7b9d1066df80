"""The graphs a detector exports and the manifest's description of them; format-1 manifests upgraded in memory.

A detector deploys one or more graphs (`features`, `patch`, `encoder`, `prior`, `decoder`, ...). The
manifest's `graphs` section gives each one's inputs and outputs, in order, with their names, shapes
("batch" for the dynamic axis) and dtypes; export, parity and every backend read it from there, so that no
stage but the detector's own knows what a graph computes. `head` names the runtime's scoring head
and the graph whose engine runs on the prepared frames (the others are the head's to call).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgead.errors import ArtifactError

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
DTYPES = ("uint8", "int32", "int64", "float16", "float32")
MAIN_GRAPH = "features"  # the one graph of format-1 (PatchCore) models


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a graph: shape with "batch" for the dynamic axis, and a dtype name."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str

    def example(self, batch: int = 1) -> np.ndarray:
        """Zeros of this shape and dtype, with `batch` for the dynamic axis."""
        return np.zeros(tuple(batch if d == "batch" else int(d) for d in self.shape), dtype=self.dtype)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class GraphSpec:
    """A graph's inputs and outputs, in order.

    `dynamic`: tensor name -> {axis: name} of axes besides the batch that the exported ONNX graph leaves
    symbolic (a graph that runs on frames of any size); the shapes give the deployed size, which fixed-shape
    engines (TensorRT) are built for.
    """

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dynamic: dict[str, dict[int, str]] = field(default_factory=dict)

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def to_dict(self) -> dict[str, Any]:
        # lists, not objects: the order is the engines' input and output order, and manifests are written with sorted keys
        entry: dict[str, Any] = {"inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs]}
        if self.dynamic:
            entry["dynamic_axes"] = {t: {str(a): n for a, n in axes.items()} for t, axes in self.dynamic.items()}
        return entry


def graph_spec(name: str, inputs: dict[str, tuple], outputs: dict[str, tuple], dynamic: dict[str, dict[int, str]] | None = None) -> GraphSpec:
    """GraphSpec from {tensor: (shape, dtype)} mappings, e.g. {"images": (("batch", 256, 256, 3), "uint8")}."""
    return GraphSpec(
        name,
        tuple(TensorSpec(n, tuple(shape), dtype) for n, (shape, dtype) in inputs.items()),
        tuple(TensorSpec(n, tuple(shape), dtype) for n, (shape, dtype) in outputs.items()),
        {t: dict(axes) for t, axes in (dynamic or {}).items()},
    )


def graph_specs(manifest: dict[str, Any], source: str = "manifest") -> dict[str, GraphSpec]:
    """Every graph of the manifest by name, checked: names, shapes and dtypes."""
    graphs = manifest.get("graphs")
    if not isinstance(graphs, dict) or not graphs:
        raise ArtifactError(f"{source}: manifest key 'graphs' is missing or empty; re-train or re-export the model")
    specs = {}
    for name, entry in graphs.items():
        sides = []
        for side in ("inputs", "outputs"):
            tensors = entry.get(side) if isinstance(entry, dict) else None
            if not isinstance(tensors, list) or not tensors:
                raise ArtifactError(f"{source}: manifest key 'graphs.{name}.{side}' must be a non-empty list of tensors")
            specs_side = []
            for i, info in enumerate(tensors):
                tensor = info.get("name") if isinstance(info, dict) else None
                if not isinstance(tensor, str) or not tensor:
                    raise ArtifactError(f"{source}: manifest key 'graphs.{name}.{side}[{i}].name' is missing")
                shape, dtype = info.get("shape"), info.get("dtype")
                if not isinstance(shape, list) or not all(d == "batch" or (isinstance(d, int) and d > 0) for d in shape):
                    raise ArtifactError(f"{source}: manifest key 'graphs.{name}.{side}.{tensor}.shape' is {shape!r}, not a list of sizes")
                if dtype not in DTYPES:
                    raise ArtifactError(f"{source}: manifest key 'graphs.{name}.{side}.{tensor}.dtype' is {dtype!r}, not one of {DTYPES}")
                specs_side.append(TensorSpec(tensor, tuple(shape), dtype))
            sides.append(tuple(specs_side))
        specs[name] = GraphSpec(name, *sides, _dynamic_axes(entry.get("dynamic_axes", {}), sides, f"{source}: manifest key 'graphs.{name}.dynamic_axes'"))
    return specs


def _dynamic_axes(entry: Any, sides: list[tuple[TensorSpec, ...]], where: str) -> dict[str, dict[int, str]]:
    """{tensor: {"1": "height"}} of the manifest -> {tensor: {1: "height"}}, checked against the tensors' ranks."""
    ranks = {t.name: len(t.shape) for side in sides for t in side}
    if not isinstance(entry, dict):
        raise ArtifactError(f"{where} must map tensor names to {{axis: name}}")
    axes: dict[str, dict[int, str]] = {}
    for tensor, named in entry.items():
        if tensor not in ranks or not isinstance(named, dict):
            raise ArtifactError(f"{where} names {tensor!r}, which is not one of the graph's tensors {sorted(ranks)}")
        try:
            axes[tensor] = {int(a): str(n) for a, n in named.items()}
        except ValueError:
            raise ArtifactError(f"{where}.{tensor} has axes {sorted(named)}, not axis numbers") from None
        if any(not 1 <= a < ranks[tensor] for a in axes[tensor]):
            raise ArtifactError(f"{where}.{tensor}: axes {sorted(axes[tensor])} must be 1..{ranks[tensor] - 1} (axis 0 is the batch)")
    return axes


def head_section(manifest: dict[str, Any], source: str = "manifest") -> dict[str, Any]:
    """The manifest's `head`: its name and the graph run on prepared frames (checked against `graphs`)."""
    head = manifest.get("head")
    if not isinstance(head, dict) or not isinstance(head.get("name"), str) or not isinstance(head.get("graph"), str):
        raise ArtifactError(f"{source}: manifest key 'head' must name the scoring head and its graph; re-train the model")
    if head["graph"] not in manifest.get("graphs", {}):
        raise ArtifactError(f"{source}: manifest key 'head.graph' names {head['graph']!r}, which is not under 'graphs'")
    return head


def upgrade_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """A format-1 manifest (PatchCore, one `features` graph) in format 2, in memory; format 2 is returned as is.

    Adds `graphs` from `input` and `features`, `head` (the kNN memory bank), each engine's `graph`, and
    the coreset settings the bank needs for enrolment, taken from the PatchCore config.
    """
    if manifest.get("format_version") != 1:
        return manifest
    manifest = copy.deepcopy(manifest)
    height, width = manifest["input"]["size_px"]
    features = manifest["features"]
    channels, (grid_h, grid_w) = features["channels"], features["grid"]
    spec = graph_spec(
        MAIN_GRAPH,
        {"images": (("batch", height, width, 3), "uint8")},
        {"features": (("batch", channels, grid_h, grid_w), "float32")},
    )
    manifest["graphs"] = {MAIN_GRAPH: spec.to_dict()}
    manifest["head"] = {"name": "knn", "graph": MAIN_GRAPH, "output": "features"}
    config = manifest.get("config", {})
    bank = manifest.get("memory_bank", {})
    bank.setdefault(
        "coreset",
        {
            "fraction": config.get("coreset_fraction"),
            "count": config.get("coreset_count"),
            "projection_dim": config.get("projection_dim", 64),
            "seed": config.get("seed", 0),
        },
    )
    for engine in manifest.get("engines", []):
        if isinstance(engine, dict):
            engine.setdefault("graph", MAIN_GRAPH)
    manifest["format_version"] = FORMAT_VERSION
    manifest["upgraded_from"] = 1
    return manifest
