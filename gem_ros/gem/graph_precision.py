"""An exported fp32 visual graph rewritten as a mixed fp16 graph, its precision explicit.

Why: TensorRT's fp16 engines used to be built from the fp32 graph with the FP16 flag and
per-layer fp32 pins. onnx-tensorrt imports ReduceL2 as x·x, a sum and a square root, and
the pins missed the multiply: x² in fp16 is inf for |x| > 256, and CLIP's residual stream
has outlier channels in the hundreds (SC-CLIP's LOF distances work on those raw features).
Fused kernels have also been reported to ignore per-layer precision (NVIDIA/TensorRT#3889,
#4505). A strongly typed network instead takes every tensor's type from the graph, so the
graph says it, with Cast nodes:

- fp16 by kind: MatMul, Gemm, Conv (the products: where the time goes, and what torch's
  autocast runs in fp16).
- fp32 by kind: every norm, reduction, square root and power (the L2 norms, LayerNorm,
  GEM's adaptive temperature, SC-CLIP's distances and quantile), squares (x·x), and Gram
  matrices (x @ xᵀ: SC-CLIP's similarities of unit vectors, thresholded against their mean,
  where fp16's rounding turned whole rows negative, so -inf, so NaN).
- Everything else follows its inputs: fp32 when any input comes from an fp32 tensor, else
  fp16. So fp32 flows on from a norm (the normalised vectors self-self attention sharpens,
  the temperature, the residual stream after the first LayerNorm) until the next product,
  as in gem_ros/gem/ss_attention.py's low-precision path; attention's scale and softmax
  between two products stay fp16, where TensorRT fuses them.

Constants are neutral: each is cast (once, stored so) to what its consumer runs in. The
graph's input and outputs stay float32.
"""

from __future__ import annotations

from collections import Counter
from typing import Optional

import numpy as np

FP16_KINDS = frozenset({"MatMul", "Gemm", "Conv"})
FP32_KINDS = frozenset(
    {
        "ReduceL1",
        "ReduceL2",
        "ReduceSumSquare",
        "ReduceSum",
        "ReduceMean",
        "ReduceMax",
        "ReduceMin",
        "ReduceProd",
        "ReduceLogSum",
        "ReduceLogSumExp",
        "LayerNormalization",
        "Sqrt",
        "Pow",
        "Reciprocal",
        "TopK",
    }
)
# Nodes whose float outputs are constants of the graph: cast to what their consumers run in.
_CONSTANT_KINDS = frozenset({"Constant", "ConstantOfShape"})


def to_mixed_fp16(model, fp32_kinds: frozenset = FP32_KINDS):
    """`model` (an onnx ModelProto of float32 tensors, as torch exports it) with MatMul, Gemm
    and Conv in fp16 and everything else as the module docstring says; a new ModelProto.
    fp32_kinds: the op types computed in fp32 (an empty set gives the all-fp16 graph that
    TensorRT's FP16 flag amounts to, for comparison)."""
    import onnx
    from onnx import shape_inference

    graph = shape_inference.infer_shapes(model, strict_mode=True).graph
    retyper = _Retyper(graph, fp32_kinds)
    for node in graph.node:
        retyper.place(node)
    nodes = retyper.float32_outputs(graph.output)
    result = onnx.ModelProto()
    result.CopyFrom(model)
    del result.graph.node[:]
    result.graph.node.extend(nodes)
    result.graph.initializer.extend(retyper.new_initializers)
    del result.graph.value_info[:]
    _drop_unused_initializers(result.graph)
    return shape_inference.infer_shapes(result, strict_mode=True)


class _Retyper:
    """One pass over a shape-inferred graph's nodes, in order: each node's float inputs cast
    to the type it runs in (`place`), the casts made once."""

    def __init__(self, graph, fp32_kinds: frozenset):
        from onnx import TensorProto

        self.fp32_kinds = fp32_kinds
        self.float_tensors = {
            v.name
            for v in [*graph.value_info, *graph.input, *graph.output]
            if v.type.tensor_type.elem_type == TensorProto.FLOAT
        }
        self.initializers = {i.name: i for i in graph.initializer}
        floats = {n for n, i in self.initializers.items() if i.data_type == TensorProto.FLOAT}
        self.float_tensors |= floats
        self.constants = set(floats)
        for node in graph.node:
            if node.op_type in _CONSTANT_KINDS:
                self.constants.update(o for o in node.output if o in self.float_tensors)
        self.producers = {o: node for node in graph.node for o in node.output}
        self.precision: dict[str, int] = {v.name: TensorProto.FLOAT for v in graph.input}
        self.new_nodes: list = []
        self.new_initializers: list = []
        self.casts: dict = {}

    def as_type(self, name: str, to: int) -> str:
        """`name` as a tensor of type `to`: itself, or a Cast of it (made once)."""
        from onnx import TensorProto, helper, numpy_helper

        if self.precision.get(name, to) == to and name not in self.constants:
            return name
        constant = name in self.constants
        if constant and name in self.initializers and (name, to) not in self.casts:
            array = numpy_helper.to_array(self.initializers[name])
            cast = f"{name}__{'fp16' if to == TensorProto.FLOAT16 else 'fp32'}"
            dtype = np.float16 if to == TensorProto.FLOAT16 else np.float32
            self.new_initializers.append(numpy_helper.from_array(array.astype(dtype), cast))
            self.casts[name, to] = cast
        if (name, to) not in self.casts:
            if constant and to == TensorProto.FLOAT:
                return name  # constants are float32 as exported
            cast = f"{name}__cast{to}"
            self.new_nodes.append(helper.make_node("Cast", [name], [cast], to=to, name=cast))
            self.casts[name, to] = cast
        return self.casts[name, to]

    def place(self, node) -> None:
        """`node` appended after the casts of its float inputs to the type it runs in."""
        to = self._classify(node)
        if to is not None:
            inputs = [self.as_type(i, to) if i in self.float_tensors else i for i in node.input]
            del node.input[:]
            node.input.extend(inputs)
        self.new_nodes.append(node)

    def _classify(self, node) -> Optional[int]:
        """The type `node` runs in, its float outputs' precision noted; None for a node kept
        as exported."""
        from onnx import TensorProto

        floats = [i for i in node.input if i and i in self.float_tensors]
        float_outputs = [o for o in node.output if o in self.float_tensors]
        if node.op_type in _CONSTANT_KINDS:
            return None
        if node.op_type == "Cast":  # torch's own casts (to float32 in an fp32 trace)
            for o in node.output:
                self.precision[o] = _attribute(node, "to")
            return None
        varying = [i for i in floats if i not in self.constants]
        if node.op_type == "Shape" or floats and not varying:
            # A shape, or arithmetic on constants (folded by any runtime): as exported, and
            # its float outputs are constants too.
            self.constants.update(float_outputs)
            return None
        if not floats:  # shapes and indices: no float in, none changed
            self.precision.update((o, TensorProto.FLOAT) for o in float_outputs)
            return None
        to = self._runs_in(node, varying)
        self.precision.update((o, to) for o in float_outputs)
        return to

    def _runs_in(self, node, varying: list[str]) -> int:
        from onnx import TensorProto

        if self.fp32_kinds and (_squares(node) or _gram(node, self.producers)):
            return TensorProto.FLOAT
        if node.op_type in FP16_KINDS:
            return TensorProto.FLOAT16
        if node.op_type in self.fp32_kinds:
            return TensorProto.FLOAT
        if any(self.precision.get(i) == TensorProto.FLOAT for i in varying):
            return TensorProto.FLOAT
        return TensorProto.FLOAT16

    def float32_outputs(self, outputs) -> list:
        """The nodes, with the graph's outputs as exported (float32): an fp16 output is
        renamed and cast back under its own name."""
        from onnx import TensorProto, helper

        renamed = {
            out.name: f"{out.name}__fp16"
            for out in outputs
            if self.precision.get(out.name) == TensorProto.FLOAT16
        }
        for node in self.new_nodes:
            for idx, o in enumerate(node.output):
                if o in renamed:
                    node.output[idx] = renamed[o]
            for idx, i in enumerate(node.input):
                if i in renamed:
                    node.input[idx] = renamed[i]
        casts = [
            helper.make_node("Cast", [low], [out], to=TensorProto.FLOAT, name=out)
            for out, low in renamed.items()
        ]
        return self.new_nodes + casts


def _squares(node) -> bool:
    """x * x: a square, computed in fp32 like the norms."""
    return node.op_type == "Mul" and len(node.input) == 2 and node.input[0] == node.input[1]


def _gram(node, producers) -> bool:
    """x @ xᵀ: the similarities (or distances) of a set of vectors with each other."""
    if node.op_type != "MatMul":
        return False
    left, right = node.input[0], producers.get(node.input[1])
    return right is not None and right.op_type == "Transpose" and right.input[0] == left


def _attribute(node, name: str):
    from onnx import helper

    return next(helper.get_attribute_value(a) for a in node.attribute if a.name == name)


def _drop_unused_initializers(graph) -> None:
    used = {i for node in graph.node for i in node.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def node_precisions(model) -> dict[str, Counter]:
    """Per op type, how many nodes take each tuple of float input types ('fp16'/'fp32'):
    what a reader (or a test) checks to see where the graph computes in which precision."""
    from onnx import TensorProto, shape_inference

    names = {TensorProto.FLOAT: "fp32", TensorProto.FLOAT16: "fp16"}
    graph = shape_inference.infer_shapes(model).graph
    types = {
        v.name: v.type.tensor_type.elem_type
        for v in [*graph.value_info, *graph.input, *graph.output]
    }
    types.update({i.name: i.data_type for i in graph.initializer})
    for node in graph.node:
        if node.op_type == "Constant":
            types[node.output[0]] = node.attribute[0].t.data_type
    out: dict[str, Counter] = {}
    for node in graph.node:
        kinds = tuple(names[types[i]] for i in node.input if i and types.get(i) in names)
        if kinds:
            out.setdefault(node.op_type, Counter())[kinds] += 1
    return out
