"""ONNX export of a detector's graph: the dynamo (torch.export) exporter first, the TorchScript-based one where it fails.

By default a graph takes uint8 NHWC `images` and returns `features` (the patch feature graph); any number
of named inputs, of any dtype and shape, and named outputs work too, given by a GraphSpec or by example
inputs and names. Every input and output gets a dynamic batch axis (axis 0), and the axes a GraphSpec marks dynamic
(height and width of a graph that runs on frames of any size) stay symbolic too.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from edgead.errors import ConfigError, DependencyError, EdgeADError
from edgead.graphs import GraphSpec, graph_spec

# the dynamo exporter's own opset (no version conversion); TensorRT 10.0's parser and ONNX Runtime's quantizer read it
OPSET = 18
INPUT_NAME = "images"
OUTPUT_NAME = "features"
EXPORTERS = ("auto", "dynamo", "torchscript")

log = logging.getLogger("edgead.export")


def image_graph(size_px: tuple[int, int], channels: int | str = "C", name: str = "features") -> GraphSpec:
    """The feature graph's interface: uint8 images (N, H, W, 3) in, `features` out."""
    return graph_spec(name, {INPUT_NAME: (("batch", *size_px, 3), "uint8")}, {OUTPUT_NAME: (("batch", channels), "float32")})


@dataclass(frozen=True)
class ExportedGraph:
    """ONNX bytes and how they were made: exporter 'dynamo' or 'torchscript', and why the fallback was taken."""

    data: bytes
    exporter: str
    fallback_reason: str | None = None


def export_onnx(
    model: torch.nn.Module,
    size_px: tuple[int, int] | None = None,
    opset: int = OPSET,
    example_inputs: Sequence[Any] | None = None,
    input_names: Sequence[str] = (INPUT_NAME,),
    output_names: Sequence[str] = (OUTPUT_NAME,),
    exporter: str = "auto",
    spec: GraphSpec | None = None,
) -> bytes:
    """Serialise `model` to ONNX bytes with a dynamic batch axis on every input and output, checked by the ONNX checker.

    `spec` names the graph's inputs and outputs and gives the example inputs' shapes and dtypes; without it,
    `example_inputs` with `input_names`/`output_names`, or else the feature graph of uint8 images of `size_px` (H, W).
    """
    return export_onnx_graph(model, size_px, opset, example_inputs, input_names, output_names, exporter, spec).data


def export_onnx_graph(
    model: torch.nn.Module,
    size_px: tuple[int, int] | None = None,
    opset: int = OPSET,
    example_inputs: Sequence[Any] | None = None,
    input_names: Sequence[str] = (INPUT_NAME,),
    output_names: Sequence[str] = (OUTPUT_NAME,),
    exporter: str = "auto",
    spec: GraphSpec | None = None,
) -> ExportedGraph:
    """As `export_onnx`, saying which exporter made the graph; 'auto' is dynamo, then TorchScript where dynamo fails."""
    onnx = _import_onnx()
    dynamic = {}
    if spec is not None:
        example_inputs, input_names, output_names = [t.example(1) for t in spec.inputs], spec.input_names, spec.output_names
        dynamic = spec.dynamic
    if exporter not in EXPORTERS:
        raise ConfigError(f"unknown ONNX exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}")
    examples = _examples(size_px, example_inputs)
    input_names, output_names = list(input_names), list(output_names)
    if len(input_names) != len(examples) or len(set(input_names)) != len(input_names) or len(set(output_names)) != len(output_names):
        raise ConfigError(f"{len(examples)} example inputs need as many distinct input names, not {input_names}; output names {output_names} must be distinct")
    model = model.eval()
    reason = None
    if exporter in ("auto", "dynamo"):
        try:
            return ExportedGraph(_checked(onnx, _dynamo(model, examples, opset, input_names, output_names, dynamic)), "dynamo")
        except Exception as exc:  # the dynamo exporter raises many types; any of them sends us to the other exporter
            reason = _first_line(exc)
            if exporter == "dynamo":
                raise EdgeADError(f"the dynamo ONNX exporter failed: {reason}") from exc
            log.warning("the dynamo ONNX exporter failed (%s); exporting with the TorchScript-based exporter instead", reason)
    data = _torchscript(model, examples, opset, input_names, output_names, dynamic)
    return ExportedGraph(_checked(onnx, data), "torchscript", reason)


def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise DependencyError("ONNX export needs the onnx package: pip install 'edgead[onnx]'") from None
    return onnx


def _examples(size_px: tuple[int, int] | None, example_inputs: Sequence[Any] | None) -> tuple[torch.Tensor, ...]:
    if example_inputs is None:
        if size_px is None:
            raise ConfigError("ONNX export needs the input size (H, W) or example inputs")
        return (torch.zeros((1, *size_px, 3), dtype=torch.uint8),)
    examples = tuple(torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x for x in example_inputs)
    if not examples or any(not isinstance(x, torch.Tensor) or x.ndim == 0 or x.shape[0] < 1 for x in examples):
        raise ConfigError("example inputs must be tensors or arrays with a batch axis first, at least one of them")
    return examples


def _first_line(exc: BaseException) -> str:
    """The first line of the deepest cause: the exporters wrap the real reason in a generic one."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep the exporters' deprecation warnings and log lines (missing torchvision ops, ...) out of the user's output."""
    # torch's loggers carry levels and handlers of their own: disabling below ERROR is the one switch that holds
    previous = logging.root.manager.disable
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(previous)


def _dynamo(
    model: torch.nn.Module, examples: tuple[torch.Tensor, ...], opset: int, input_names: list[str], output_names: list[str],
    dynamic: dict[str, dict[int, str]] | None = None,
) -> bytes:
    # torch.export specialises axes of size 1: trace on a batch of two so the batch axis stays symbolic
    examples = tuple(torch.cat([x, x]) if x.shape[0] == 1 else x for x in examples)
    batch = torch.export.Dim("batch")
    dims = {name: torch.export.Dim.AUTO for axes in (dynamic or {}).values() for name in axes.values()}
    shapes = tuple({0: batch, **{a: dims[n] for a, n in (dynamic or {}).get(name, {}).items()}} for name in input_names)
    with _quiet(), torch.no_grad():
        program = torch.onnx.export(
            model,
            examples,
            dynamo=True,
            opset_version=opset,
            input_names=input_names,
            output_names=output_names,
            dynamic_shapes=shapes,
            optimize=True,
            verbose=False,
        )
    proto = program.model_proto
    found = [o.name for o in proto.graph.output]
    if found != output_names:
        raise EdgeADError(f"the graph's outputs are {found}, not {output_names}")
    _name_axes(proto, dynamic or {})
    return proto.SerializeToString()


def _name_axes(proto: Any, dynamic: dict[str, dict[int, str]]) -> None:
    """Give the exporter's symbolic axes the spec's names (the dynamo exporter calls them s0, s1, ...); a fixed one is a bug."""
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        for axis, name in dynamic.get(value.name, {}).items():
            if not dims[axis].dim_param:
                raise EdgeADError(f"the exporter fixed axis {axis} of {value.name!r} at {dims[axis].dim_value}; it should stay dynamic ({name})")
            dims[axis].dim_param = name


def _torchscript(
    model: torch.nn.Module, examples: tuple[torch.Tensor, ...], opset: int, input_names: list[str], output_names: list[str],
    dynamic: dict[str, dict[int, str]] | None = None,
) -> bytes:
    buffer = io.BytesIO()
    axes = {name: {0: "batch", **(dynamic or {}).get(name, {})} for name in [*input_names, *output_names]}
    with _quiet(), torch.no_grad():
        torch.onnx.export(
            model,
            examples,
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=axes,
            do_constant_folding=True,
        )
    return buffer.getvalue()


def _checked(onnx: Any, data: bytes) -> bytes:
    try:
        onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    except Exception as exc:  # the checker raises its own ValidationError types
        raise EdgeADError(f"the exported ONNX graph failed the ONNX checker: {exc}") from exc
    return data


def fixed_axes(data: bytes, spec: GraphSpec) -> bytes:
    """ONNX bytes with the spec's dynamic axes (all but the batch) fixed at the spec's sizes: for fixed-shape engines (TensorRT)."""
    if not spec.dynamic:
        return data
    onnx = _import_onnx()
    proto = onnx.load_from_string(data)
    sizes = {t.name: t.shape for t in (*spec.inputs, *spec.outputs)}
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        for axis in spec.dynamic.get(value.name, {}):
            dims[axis].dim_value = int(sizes[value.name][axis])  # clears dim_param (one of the two is set)
    return _checked(onnx, proto.SerializeToString())


def graph_io(data: bytes) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    """Input and output shapes of ONNX bytes by name, symbolic axes as their names ('batch')."""
    onnx = _import_onnx()
    graph = onnx.load_from_string(data).graph
    initializers = {t.name for t in graph.initializer}

    def shape(value: Any) -> list[Any]:
        return [d.dim_param or int(d.dim_value) for d in value.type.tensor_type.shape.dim]

    return {v.name: shape(v) for v in graph.input if v.name not in initializers}, {v.name: shape(v) for v in graph.output}
