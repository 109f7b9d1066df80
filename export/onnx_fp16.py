"""FP16 ONNX graphs: precision carried in the graph, as TensorRT 11's strongly typed networks require.

The FP32 graph's float tensors and weights become FP16, with three exceptions kept in FP32:
- the input preparation: from each graph input through casts, layout changes and the normalisation
  arithmetic (uint8 -> float -> (x - mean) / std) up to the first layer that computes;
- numerically fragile operators: reductions (a mean over an error map, a norm), exponentials and
  logarithms, powers and square roots, softmax and the normalisation layers;
- the graph's outputs (FP32 unless named in `fp16_outputs`): the heads score in FP32.
Integer inputs (uint8 images, int64 codes) are untouched. Works for any detector's graph.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from edgead.errors import DependencyError, EdgeADError

# layers whose FP16 result drifts or overflows: sums over many elements, exp/log/pow, normalisations
# (max, min, top-k and arg-max are exact in FP16 and are not here)
FRAGILE_OPS = (
    "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
    "ReduceProd", "Softmax", "LogSoftmax", "Exp", "Log", "Pow", "Sqrt", "Reciprocal", "CumSum",
    "LayerNormalization", "InstanceNormalization", "GroupNormalization", "LpNormalization",
)
# operators that only move, cast or rescale values: the input preparation is made of these
PREPARATION_OPS = ("Cast", "Transpose", "Reshape", "Unsqueeze", "Squeeze", "Sub", "Div", "Mul", "Add", "Identity")


def preparation_nodes(graph: Any, inputs: Iterable[str] | None = None) -> list[str]:
    """Names of the nodes between the graph inputs and the first computing layer (kept in FP32)."""
    initializers = {t.name for t in graph.initializer}
    reached = set(inputs if inputs is not None else (v.name for v in graph.input if v.name not in initializers))
    constants = initializers | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    names = []
    for node in graph.node:  # ONNX nodes are stored in topological order
        fed = [i for i in node.input if i]
        if node.op_type in PREPARATION_OPS and fed and all(i in reached or i in constants for i in fed) and any(i in reached for i in fed):
            reached.update(node.output)
            names.append(node.name)
    return names


# graph inputs that must stay float32 whatever the node's precision: Resize's roi and scales
FP32_SLOTS = {("Resize", 1), ("Resize", 2), ("Upsample", 1)}
# nodes that take any type and are left alone; nodes with subgraphs stay FP32 whole
ANY_TYPE_OPS = ("Shape", "Size")
SUBGRAPH_OPS = ("If", "Loop", "Scan")
_FP16_MAX = 65504.0


def to_fp16(fp32_graph: bytes, fp16_outputs: Iterable[str] = (), keep_fp32_ops: Iterable[str] = FRAGILE_OPS) -> bytes:
    """FP32 ONNX bytes -> mixed FP16 ONNX bytes (see the module docstring for what stays FP32).

    Casts are inserted only where a tensor crosses between FP16 and FP32 nodes, once per tensor.
    """
    try:
        import onnx
    except ImportError:
        raise DependencyError("FP16 ONNX graphs need the onnx package: pip install 'edgead[onnx]'") from None
    try:
        model = onnx.shape_inference.infer_shapes(onnx.load_from_string(fp32_graph), strict_mode=True)
        _Converter(onnx, model, set(keep_fp32_ops)).run(set(fp16_outputs))
        onnx.checker.check_model(model, full_check=True)
    except EdgeADError:
        raise
    except Exception as exc:  # onnx raises its own types for graphs it cannot infer or check
        raise EdgeADError(f"could not convert the ONNX graph to FP16: {exc}") from exc
    return model.SerializeToString()


class _Converter:
    """One pass over the nodes in their (topological) order: pick each node's precision, cast where it changes."""

    def __init__(self, onnx: Any, model: Any, keep_fp32_ops: set[str]) -> None:
        self.onnx, self.model, self.graph = onnx, model, model.graph
        self.FLOAT, self.HALF = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
        graph = self.graph
        for index, node in enumerate(graph.node):
            node.name = node.name or f"edgead_node_{index}"
        self.types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.value_info, *graph.output]}
        self.constants = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.constants[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)
        self.types.update({name: self._dtype_code(value) for name, value in self.constants.items()})
        prepared = set(preparation_nodes(graph))
        self.half_nodes = {
            n.name for n in graph.node
            if n.op_type not in keep_fp32_ops and n.op_type not in ANY_TYPE_OPS and n.op_type not in SUBGRAPH_OPS
            and n.op_type != "Constant" and n.name not in prepared
            and any(self.types.get(t) == self.FLOAT for t in [*n.input, *n.output] if t)
        }
        self.half_tensors: set[str] = set()
        self.casts: dict[tuple[str, int], str] = {}
        self.half_constants: dict[str, str] = {}
        self.nodes: list[Any] = []

    def _dtype_code(self, value: Any) -> int:
        return self.onnx.helper.np_dtype_to_tensor_dtype(value.dtype)

    def run(self, fp16_outputs: set[str]) -> None:
        outputs = [o.name for o in self.graph.output]
        unknown = fp16_outputs - set(outputs)
        if unknown:
            raise EdgeADError(f"fp16_outputs {sorted(unknown)} are not outputs of the graph ({outputs})")
        for node in self.graph.node:
            self._convert(node)
        for output in self.graph.output:
            want = self.HALF if output.name in fp16_outputs else self.FLOAT
            have = self.HALF if output.name in self.half_tensors else self.types.get(output.name)
            if have in (self.HALF, self.FLOAT) and have != want:
                self._recast_output(output.name, want)
            if have in (self.HALF, self.FLOAT):
                output.type.tensor_type.elem_type = want
        used = {i for node in self.nodes for i in node.input} | set(outputs)
        kept = [n for n in self.nodes if n.op_type != "Constant" or n.output[0] in used]
        del self.graph.node[:]
        self.graph.node.extend(kept)
        initializers = [t for t in self.graph.initializer if t.name in used]  # FP32 originals now read by no node
        del self.graph.initializer[:]
        self.graph.initializer.extend(initializers)
        del self.graph.value_info[:]  # the types changed: inferred afresh by the checker's full check

    def _convert(self, node: Any) -> None:
        half = node.name in self.half_nodes
        for slot, name in enumerate(node.input):
            if not name or self.types.get(name) != self.FLOAT or node.op_type in ANY_TYPE_OPS:
                continue
            want = self.HALF if half and (node.op_type, slot) not in FP32_SLOTS else self.FLOAT
            if name in self.constants:
                if want == self.HALF:
                    node.input[slot] = self._half_constant(name)
                continue
            have = self.HALF if name in self.half_tensors else self.FLOAT
            if have != want:
                node.input[slot] = self._cast(name, want)
        if half:
            for attribute in node.attribute:
                if node.op_type == "Cast" and attribute.name == "to" and attribute.i == self.FLOAT:
                    attribute.i = self.HALF
                if node.op_type == "ConstantOfShape" and attribute.name == "value" and attribute.t.data_type == self.FLOAT:
                    value = self.onnx.numpy_helper.to_array(attribute.t)
                    attribute.t.CopyFrom(self.onnx.numpy_helper.from_array(value.astype("float16"), attribute.t.name))
            self.half_tensors.update(o for o in node.output if self.types.get(o) == self.FLOAT or node.op_type == "Cast")
        self.nodes.append(node)

    def _cast(self, name: str, to: int) -> str:
        key = (name, to)
        if key not in self.casts:
            target = f"{name}_as_{'fp16' if to == self.HALF else 'fp32'}"
            self.nodes.append(self.onnx.helper.make_node("Cast", [name], [target], name=f"edgead_cast_{target}", to=to))
            self.casts[key] = target
        return self.casts[key]

    def _half_constant(self, name: str) -> str:
        if name not in self.half_constants:
            import numpy as np

            value = np.clip(self.constants[name], -_FP16_MAX, _FP16_MAX).astype(np.float16)  # saturate, never inf
            target = f"{name}_fp16"
            self.graph.initializer.append(self.onnx.numpy_helper.from_array(value, target))
            self.half_constants[name] = target
        return self.half_constants[name]

    def _recast_output(self, name: str, to: int) -> None:
        inner = f"{name}_{'fp16' if to == self.FLOAT else 'fp32'}_inside"
        for node in self.nodes:
            node.output[:] = [inner if o == name else o for o in node.output]
            node.input[:] = [inner if i == name else i for i in node.input]
        self.nodes.append(self.onnx.helper.make_node("Cast", [inner], [name], name=f"edgead_cast_{name}", to=to))


def precision_summary(graph_bytes: bytes) -> dict[str, int]:
    """How many computing nodes of a graph run in FP16 and in FP32 (by their first float output)."""
    import onnx
    from onnx import TensorProto

    model = onnx.shape_inference.infer_shapes(onnx.load_from_string(graph_bytes))
    types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.output, *model.graph.input]}
    counts = {"fp16": 0, "fp32": 0}
    for node in model.graph.node:
        if node.op_type in ("Cast", "Constant", "Shape"):
            continue
        kind = {TensorProto.FLOAT16: "fp16", TensorProto.FLOAT: "fp32"}.get(types.get(node.output[0]))
        if kind:
            counts[kind] += 1
    return counts
