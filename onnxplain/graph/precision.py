"""float16 and bfloat16 models computed in float32, so that the backward graph runs in float32.

Weights, constants, Cast targets and ``dtype`` attributes of type float16/bfloat16 become float32.
A float16 graph input keeps its type and is cast to float32 where it enters; a float16 output is
cast back from float32 where it leaves, so the explanation graph takes and gives what the model did.
bfloat16 inputs and outputs become float32: numpy has no bfloat16, and onnxruntime's Python API
cannot take one. The forward values then differ from the model's own by its rounding (float16:
about 1e-3 relative; bfloat16: 1e-2) and no more; onnxruntime's CPU provider, which lacks most
bfloat16 kernels, runs the result.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

LOW = (TensorProto.FLOAT16, TensorProto.BFLOAT16)
_TYPE_ATTRS = ("to", "dtype")


def _is_low(vi: onnx.ValueInfoProto) -> bool:
    return vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type in LOW


def _float32(t: TensorProto) -> TensorProto:
    return numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name)


def uses_low_precision(model: onnx.ModelProto) -> bool:
    g = model.graph
    return (
        any(_is_low(vi) for vi in list(g.input) + list(g.output) + list(g.value_info))
        or any(t.data_type in LOW for t in g.initializer)
        or any(
            a.name in _TYPE_ATTRS and a.i in LOW or a.type == onnx.AttributeProto.TENSOR and a.t.data_type in LOW
            for n in g.node
            for a in n.attribute
        )
    )


def _convert_graph(g: onnx.GraphProto) -> None:
    """Every float16/bfloat16 tensor, attribute and type of ``g`` (and its subgraphs) in float32."""
    for i, t in enumerate(g.initializer):
        if t.data_type in LOW:
            g.initializer[i].CopyFrom(_float32(t))
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        if _is_low(vi):
            vi.type.tensor_type.elem_type = TensorProto.FLOAT
    for node in g.node:
        for a in node.attribute:
            if a.name in _TYPE_ATTRS and a.type == onnx.AttributeProto.INT and a.i in LOW:
                a.i = TensorProto.FLOAT
            elif a.type == onnx.AttributeProto.TENSOR and a.t.data_type in LOW:
                a.t.CopyFrom(_float32(a.t))
            elif a.type == onnx.AttributeProto.GRAPH:
                _convert_graph(a.g)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for sub in a.graphs:
                    _convert_graph(sub)


def _rename(g: onnx.GraphProto, old: str, new: str, outputs: bool = False) -> None:
    for node in g.node:
        names = node.output if outputs else node.input
        for i, n in enumerate(names):
            if n == old:
                names[i] = new
        for a in node.attribute:  # subgraphs may read the tensor from the outer scope
            for sub in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
                if not outputs:
                    _rename(sub, old, new)


def to_float32(model: onnx.ModelProto) -> onnx.ModelProto:
    """A float32 copy of a float16/bfloat16 model (the same model when it has no such tensor)."""
    if not uses_low_precision(model):
        return model
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    half_in = [vi.name for vi in g.input if vi.type.tensor_type.elem_type == TensorProto.FLOAT16]
    half_out = [vi.name for vi in g.output if vi.type.tensor_type.elem_type == TensorProto.FLOAT16]
    _convert_graph(g)
    for vi in g.input:
        if vi.name in half_in:
            vi.type.tensor_type.elem_type = TensorProto.FLOAT16
    for vi in g.output:
        if vi.name in half_out:
            vi.type.tensor_type.elem_type = TensorProto.FLOAT16
    head, tail = [], []
    for name in half_in:
        inner = f"{name}:float32"
        _rename(g, name, inner)
        head.append(helper.make_node("Cast", [name], [inner], name=f"{name}:to_float32", to=TensorProto.FLOAT))
    for name in half_out:
        inner = f"{name}:float32"
        _rename(g, name, inner, outputs=True)
        _rename(g, name, inner)
        tail.append(helper.make_node("Cast", [inner], [name], name=f"{name}:to_float16", to=TensorProto.FLOAT16))
    nodes = head + list(g.node) + tail
    del g.node[:]
    g.node.extend(nodes)
    return m
