"""Canonicalisation of quantised operators into DequantizeLinear -> float op -> QuantizeLinear.

onnxruntime's QOperator format (``quantize_static(quant_format=QOperator)``) and dynamic
quantisation (``quantize_dynamic``) compute on integer tensors, where no gradient flows. Each such
node becomes its dequantised float equivalent, as in the QDQ format (onnxruntime, "Quantize ONNX
models", QDQ vs QOperator): ``QLinearConv(x, ..., y_scale, y_zp)`` becomes
``QuantizeLinear(Conv(DequantizeLinear(x), W_float, B_float), y_scale, y_zp)``, so the
straight-through rules of :mod:`onnxplain.rules.vjp.quantize` apply and the forward values stay
those of the integer kernels up to one quantisation step (where the float sum rounds differently).

* the ONNX ops QLinearConv, QLinearMatMul, MatMulInteger, ConvInteger and the com.microsoft ops
  QGemm, QLinearAdd, QLinearMul, QLinearSigmoid, QLinearLeakyRelu, QLinearAveragePool,
  QLinearGlobalAveragePool, QLinearConcat;
* ops that move or select integer values (MaxPool, Flatten, Reshape, ...) keep their quantisation
  parameters: ``DequantizeLinear -> op -> QuantizeLinear`` with the input's scale and zero point;
* MatMulInteger/ConvInteger give ``(a - a_zp) @ (b - b_zp)`` in int32 that only a Cast to float
  reads (then scaled by onnxruntime's Mul): they become the float product, the Cast an Identity.

Constant weights are dequantised here in numpy (``(q - zp) * s`` in float32, as the spec defines).
Any other node that reads a quantised tensor is refused with an error naming it.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import TensorProto

from onnxplain.errors import OnnxplainError

MS = "com.microsoft"
# ops that only move, select or compare values: they commute with the increasing map q -> (q - zp) s
STRUCTURAL = {
    "MaxPool",
    "GlobalMaxPool",
    "Flatten",
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Slice",
    "Gather",
    "Split",
    "Expand",
    "Tile",
    "DepthToSpace",
    "SpaceToDepth",
    "Identity",
    "Resize",
    "ReduceMax",
    "ReduceMin",
    "Concat",
}
READS_NO_VALUES = {"Shape", "Size", "DequantizeLinear"}


# op key -> spec(node) = (float op, [(q, scale, zp, axis) per input], output [scale, zp] (None: float output,
# "int32": MatMulInteger/ConvInteger), (bias index, x triple index, w triple index) or None)
def _conv(n):
    trip = [(*n.inputs[0:3], 1), (*n.inputs[3:6], 0)]
    return "Conv", trip, n.inputs[6:8], (8, 0, 3)


def _matmul(n):
    return "MatMul", [(*n.inputs[0:3], 1), (*n.inputs[3:6], -1)], n.inputs[6:8], None


def _gemm(n):
    b_axis = 0 if n.attrs.get("transB", 0) else 1
    out = n.inputs[7:9] if len(n.inputs) > 7 and n.inputs[7].name else None
    return "Gemm", [(*n.inputs[0:3], 1), (*n.inputs[3:6], b_axis)], out, (6, 0, 3)


def _binary(op):
    return lambda n: (op, [(*n.inputs[0:3], 1), (*n.inputs[3:6], 1)], n.inputs[6:8], None)


def _unary(op):
    return lambda n: (op, [(*n.inputs[0:3], 1)], n.inputs[3:5], None)


def _concat(n):
    ins = n.inputs[2:]
    return "Concat", [(*ins[i : i + 3], 1) for i in range(0, len(ins), 3)], n.inputs[0:2], None


def _integer(op, b_axis):
    def spec(n):
        zp = [n.inputs[i] if len(n.inputs) > i and n.inputs[i].name else None for i in (2, 3)]
        return op, [(n.inputs[0], None, zp[0], 1), (n.inputs[1], None, zp[1], b_axis)], "int32", None

    return spec


QLINEAR = {
    "QLinearConv": _conv,
    "QLinearMatMul": _matmul,
    "MatMulInteger": _integer("MatMul", -1),
    "ConvInteger": _integer("Conv", 0),
    f"{MS}:QGemm": _gemm,
    f"{MS}:QLinearAdd": _binary("Add"),
    f"{MS}:QLinearMul": _binary("Mul"),
    f"{MS}:QLinearSigmoid": _unary("Sigmoid"),
    f"{MS}:QLinearLeakyRelu": _unary("LeakyRelu"),
    f"{MS}:QLinearAveragePool": _unary("AveragePool"),
    f"{MS}:QLinearGlobalAveragePool": _unary("GlobalAveragePool"),
    f"{MS}:QLinearConcat": _concat,
}
TRIGGERS = {k.split(":")[-1] for k in QLINEAR} | {"QuantizeLinear", "DynamicQuantizeLinear"}


def _key(node) -> str:
    return node.op if node.domain in (None, "", "ai.onnx") else f"{node.domain}:{node.op}"


def _name(node) -> str:
    return f"{node.op} '{node.name}'"


def dequantize_constant(q: np.ndarray, s: np.ndarray, zp: np.ndarray | None, axis: int) -> np.ndarray:
    """``(q - zp) * s`` in float32, scale and zero point per tensor or along ``axis`` (ONNX spec)."""
    s = np.asarray(s, dtype=np.float32)
    zp = np.zeros((), np.int64) if zp is None else np.asarray(zp).astype(np.int64)
    if s.ndim == 1 and s.size > 1 or zp.ndim == 1 and zp.size > 1:
        shape = [-1 if i == axis % q.ndim else 1 for i in range(q.ndim)]
        s, zp = s.reshape(shape) if s.size > 1 else s.reshape(()), zp.reshape(shape) if zp.size > 1 else zp.reshape(())
    return ((q.astype(np.int64) - zp).astype(np.float32) * s).astype(np.float32)


class _Dequantizer:
    def __init__(self, graph: gs.Graph):
        self.graph = graph
        self.params: dict[str, tuple] = {}  # quantised tensor name -> (scale, zero point)
        self.cache: dict = {}
        self.count = 0

    def fresh(self, hint: str, dtype=None) -> gs.Variable:
        self.count += 1
        return gs.Variable(f"{hint}:dq{self.count}", dtype=dtype)

    def node(self, op, inputs, outputs, attrs=None):
        self.graph.nodes.append(
            gs.Node(op, name=f"{outputs[0].name}:node", attrs=attrs or {}, inputs=inputs, outputs=outputs)
        )

    def float_of(self, q, s, zp, axis):
        """The dequantised float tensor of ``q`` (scale ``s``; None: 1), a constant when all are."""
        key = (q.name, s.name if s is not None else None, zp.name if zp is not None else None)
        if key in self.cache:
            return self.cache[key]
        consts = all(isinstance(t, gs.Constant) for t in (q, s, zp) if t is not None)
        if consts:
            sv = np.float32(1) if s is None else s.values
            zv = None if zp is None else zp.values
            out = gs.Constant(f"{q.name}:dequantized", dequantize_constant(q.values, sv, zv, axis))
        else:
            out = self.fresh(q.name, np.float32)
            scale = s if s is not None else gs.Constant(f"{q.name}:unit_scale", np.array(1, np.float32))
            attrs = {"axis": axis} if getattr(scale, "shape", None) not in (None, [], [1], (), (1,)) else {}
            self.node("DequantizeLinear", [q, scale] + ([zp] if zp is not None else []), [out], attrs)
        self.cache[key] = out
        return out

    def quantize(self, f, out, s, zp):
        """``out = QuantizeLinear(f, s, zp)``; ``out`` becomes a quantised tensor."""
        self.node("QuantizeLinear", [f, s] + ([zp] if zp is not None and zp.name else []), [out])
        self.params[out.name] = (s, zp)

    def bias(self, n, spec, ins):
        """An int32 bias in the accumulator's scale: input scale x weight scale (QGemm: times alpha)."""
        i, xi, wi = spec
        if len(n.inputs) <= i or not n.inputs[i].name:
            return None
        b = n.inputs[i]
        xs, ws = n.inputs[xi + 1], n.inputs[wi + 1]
        alpha = np.float32(n.attrs.get("alpha", 1.0))
        if all(isinstance(t, gs.Constant) for t in (b, xs, ws)):
            scale = (xs.values.astype(np.float32) * ws.values.astype(np.float32) * alpha).astype(np.float32)
            return gs.Constant(f"{b.name}:dequantized", dequantize_constant(b.values, scale, None, 0))
        raise OnnxplainError(f"{_name(n)}: its bias and scales must be constants to dequantise it")

    def rewrite_qlinear(self, n):
        op, trips, out, bias = QLINEAR[_key(n)](n)
        ins = [self.float_of(q, s, zp, axis) for q, s, zp, axis in trips]
        if bias is not None:
            b = self.bias(n, bias, ins)
            if b is not None:
                ins.append(b)
        attrs = {k: v for k, v in n.attrs.items() if k != "channels_last"}
        if n.attrs.get("channels_last", 0):
            raise OnnxplainError(f"{_name(n)}: channels_last=1 is not supported")
        if op == "Gemm":
            attrs["beta"] = 1.0
        y = n.outputs[0]
        n.outputs.clear()
        n.inputs.clear()
        if out == "int32":  # MatMulInteger/ConvInteger: the float product replaces the Cast to float that reads it
            readers = list(y.outputs)
            if not readers or any(r.op != "Cast" or r.attrs.get("to") != TensorProto.FLOAT for r in readers):
                raise OnnxplainError(
                    f"{_name(n)}: its int32 result is read by something other than a Cast to float; "
                    "onnxplain cannot dequantise it"
                )
            f = self.fresh(y.name, np.float32)
            self.node(op, ins, [f], attrs)
            for r in readers:
                r.op, r.attrs, r.inputs[0] = "Identity", {}, f
            return
        if out is None:  # QGemm without an output scale gives float
            self.node(op, ins, [y], attrs)
            return
        f = self.fresh(y.name, np.float32)
        self.node(op, ins, [f], attrs)
        self.quantize(f, y, out[0], out[1] if len(out) > 1 else None)

    def rewrite_structural(self, n, params):
        s, zp = params
        quantised = [i for i, t in enumerate(n.inputs) if t.name in self.params]
        if any(self.params[n.inputs[i].name] != params for i in quantised) or (n.op != "Concat" and quantised != [0]):
            raise OnnxplainError(
                f"{_name(n)} combines quantised tensors of different scales; onnxplain cannot dequantise it"
            )
        for i in quantised:
            n.inputs[i] = self.float_of(n.inputs[i], s, zp, 1)
        for k, y in enumerate(list(n.outputs) if n.op == "Split" else n.outputs[:1]):
            f = self.fresh(y.name, np.float32)
            n.outputs[k] = f
            self.quantize(f, y, s, zp)

    def run(self) -> int:
        rewritten = 0
        for n in list(self.graph.nodes):
            key = _key(n)
            if key in QLINEAR:
                self.rewrite_qlinear(n)
                rewritten += 1
            elif key == "QuantizeLinear":
                zp = n.inputs[2] if len(n.inputs) > 2 and n.inputs[2].name else None
                self.params[n.outputs[0].name] = (n.inputs[1], zp)
            elif key == "DynamicQuantizeLinear":
                self.params[n.outputs[0].name] = (n.outputs[1], n.outputs[2])
            else:
                read = [t for t in n.inputs if t.name in self.params]
                if not read or key in READS_NO_VALUES:
                    continue
                if key not in STRUCTURAL:
                    raise OnnxplainError(
                        f"{_name(n)} computes on the quantised tensor '{read[0].name}' and onnxplain "
                        "has no float equivalent for it; quantise the model in QDQ format instead"
                    )
                self.rewrite_structural(n, self.params[read[0].name])
                rewritten += 1
        return rewritten


def dequantize(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its integer operators replaced by dequantised float ones (the same model when
    it has none)."""
    if not any(n.op_type in TRIGGERS for n in model.graph.node):
        return model
    graph = gs.import_onnx(model)
    graph.toposort()
    if not _Dequantizer(graph).run():
        return model
    graph.cleanup()
    graph.toposort()
    out = gs.export_onnx(graph, do_type_check=False)
    out.ir_version = model.ir_version
    del out.opset_import[:]
    out.opset_import.extend(model.opset_import)
    return out
