"""An ``op.Mul(a, b)``-style builder that emits graphsurgeon nodes in O(1) each.

Rules call ``b.Mul(x, y)``, ``b.Conv(g, w, strides=[1, 1])`` and so on. The builder names the
new tensors under the current scope, types constants like the tensor they combine with, and
knows the few ops whose signature changed between opsets (Reduce*, Squeeze, Unsqueeze, Split).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxplain.errors import OnnxplainError, ShapeError

FLOAT_DTYPES = {np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)}
_BOOL_OPS = {"Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "Not", "And", "Or", "Xor", "IsNaN", "IsInf"}
_INT64_OPS = {"Shape", "Size", "ArgMax", "ArgMin", "NonZero"}
# ops whose ``axes`` moved from an attribute to an input, and the opset where that happened
_AXES_AS_INPUT = {
    "ReduceSum": 13,
    "Squeeze": 13,
    "Unsqueeze": 13,
    "ReduceMean": 18,
    "ReduceMax": 18,
    "ReduceMin": 18,
    "ReduceProd": 18,
    "ReduceL2": 18,
    "ReduceSumSquare": 18,
    "ReduceLogSumExp": 18,
}


def np_dtype(tensor) -> np.dtype | None:
    """numpy dtype of a graphsurgeon tensor, or None when unknown."""
    dt = getattr(tensor, "dtype", None)
    if dt is None:
        return None
    if isinstance(dt, int):  # onnx.TensorProto enum
        try:
            return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(dt))
        except Exception:
            return None
    return np.dtype(dt)


def is_float(tensor) -> bool:
    return np_dtype(tensor) in FLOAT_DTYPES or getattr(tensor, "dtype", None) == onnx.TensorProto.BFLOAT16


class Builder:
    """Emits nodes into ``graph``. Attribute access with a capitalised name emits that op."""

    def __init__(self, graph: gs.Graph, opset: int, prefix: str = "onnxplain"):
        self.graph = graph
        self.opset = opset
        self.prefix = prefix
        self.scope = prefix
        self._ids = itertools.count()
        self._consts: dict = {}
        self._names = {t for t in graph.tensors()}  # names already in the graph

    # ---- naming -------------------------------------------------------------------------
    def name(self, hint: str) -> str:
        while True:
            n = f"{self.scope}/{hint}_{next(self._ids)}"
            if n not in self._names:
                self._names.add(n)
                return n

    def into(self, graph: gs.Graph) -> Builder:
        """A builder emitting into ``graph`` (a subgraph) that shares this one's names and scope, so
        names stay unique across scopes; constants are its own (each graph exports those it uses)."""
        child = Builder.__new__(Builder)
        child.__dict__.update(self.__dict__)
        child.graph, child._consts = graph, {}
        return child

    # ---- emission -----------------------------------------------------------------------
    def __getattr__(self, op: str):
        if not op[:1].isupper():
            raise AttributeError(op)
        return lambda *inputs, **attrs: self.emit(op, *inputs, **attrs)

    def emit(self, op: str, *inputs, outputs: int = 1, dtype=None, domain: str | None = None, **attrs):
        """Emit one node; returns its output Variable, or a list when ``outputs > 1``."""
        ins = [gs.Variable.empty() if i is None else self.tensor(i) for i in inputs]
        if dtype is None:
            if op in _BOOL_OPS:
                dtype = np.bool_
            elif op in _INT64_OPS:
                dtype = np.int64
            elif op == "Cast":
                dtype = onnx.helper.tensor_dtype_to_np_dtype(attrs["to"])
            elif op == "Where":
                dtype = np_dtype(ins[1])
            elif op == "OneHot":
                dtype = np_dtype(ins[2])
            elif ins:
                dtype = np_dtype(ins[0])
        dtypes = dtype if isinstance(dtype, (list, tuple)) else [dtype] * outputs
        outs = [gs.Variable(self.name(op), dtype=dt) for dt in dtypes]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        node = gs.Node(op, name=self.name(op + "_node"), attrs=attrs, inputs=ins, outputs=outs, domain=domain)
        self.graph.nodes.append(node)
        return outs[0] if outputs == 1 else outs

    # ---- constants ----------------------------------------------------------------------
    def tensor(self, value):
        if isinstance(value, gs.Tensor):
            return value
        return self.const(value)

    def const(self, value, like=None, dtype=None) -> gs.Constant:
        """A constant typed like ``like`` (or ``dtype``); small constants are shared."""
        if dtype is None:
            dtype = np_dtype(like) if like is not None else None
        arr = np.asarray(value, dtype=dtype)
        if arr.dtype == np.float64 and dtype is None:
            arr = arr.astype(np.float32)
        key = (arr.dtype.str, arr.shape, arr.tobytes()) if arr.size <= 64 else None
        if key is not None and key in self._consts:
            return self._consts[key]
        c = gs.Constant(self.name("const"), np.array(arr, order="C"))  # (ascontiguousarray made 0-d scalars 1-d)
        if key is not None:
            self._consts[key] = c
        return c

    def ints(self, values: Sequence[int]) -> gs.Constant:
        return self.const(np.asarray(list(values), dtype=np.int64))

    def mask(self, g, condition):
        """``g`` where ``condition`` holds, else 0, as ``g * float(condition)`` (faster than Where)."""
        return self.Mul(g, self.Cast(condition, to=onnx.helper.np_dtype_to_tensor_dtype(np_dtype(g))))

    def zeros_like(self, t):
        shape = t.shape
        if shape is not None and all(isinstance(d, int) for d in shape):
            return self.const(np.zeros(shape), dtype=np_dtype(t))  # (dtype=, or const() narrows float64)
        value = np.zeros([1], dtype=np_dtype(t))
        return self.emit(
            "ConstantOfShape", self.Shape(t), value=gs.Constant(self.name("zero"), value), dtype=np_dtype(t)
        )

    # ---- opset-aware helpers ------------------------------------------------------------
    def _axes_op(self, op, x, axes, **attrs):
        if axes is None:
            return self.emit(op, x, **attrs)
        if self.opset >= _AXES_AS_INPUT.get(op, 10**9):
            ax = axes if isinstance(axes, gs.Tensor) else self.ints(axes)
            return self.emit(op, x, ax, **attrs)
        if isinstance(axes, gs.Tensor):
            raise ValueError(f"{op} with dynamic axes needs opset >= {_AXES_AS_INPUT[op]}")
        return self.emit(op, x, axes=list(axes), **attrs)

    def reduce(self, op: str, x, axes, keepdims: bool = True, **attrs):
        return self._axes_op(op, x, axes, keepdims=int(keepdims), **attrs)

    def squeeze(self, x, axes):
        return self._axes_op("Squeeze", x, axes)

    def unsqueeze(self, x, axes):
        return self._axes_op("Unsqueeze", x, axes)

    def split(self, x, sizes: Sequence[int], axis: int):
        if self.opset >= 13:
            return self.emit("Split", x, self.ints(sizes), axis=axis, outputs=len(sizes))
        return self.emit("Split", x, axis=axis, split=list(sizes), outputs=len(sizes))

    def slice(self, x, starts, ends, axes, steps=None):
        args = [x, self.ints(starts), self.ints(ends), self.ints(axes)]
        if steps is not None:
            args.append(self.ints(steps))
        return self.emit("Slice", *args)

    def shape_of(self, x, start: int | None = None, end: int | None = None):
        """``Shape(x)[start:end]`` (the start/end attributes need opset 15, so slice instead)."""
        s = self.Shape(x)
        if start is None and end is None:
            return s
        return self.slice(s, [start or 0], [end if end is not None else 2**62], [0])

    def transpose(self, x, perm):
        return self.Transpose(x, perm=list(perm))

    # ---- broadcasting -------------------------------------------------------------------
    def unbroadcast(self, g, x, gshape):
        """Sum ``g`` (of shape ``gshape``) back to the shape of ``x`` under numpy broadcasting.

        Static shapes give a plain ReduceSum; dimensions that cannot be compared statically
        fall back to a shape-driven reduction built from Shape/Equal/NonZero.
        """
        rx = rank(x)
        if rx is None or gshape is None:
            raise ShapeError(f"cannot reduce a broadcast cotangent to '{x.name}': its rank is unknown")
        lead = len(gshape) - rx
        axes, unknown = list(range(lead)), False
        for i, (dx, dg) in enumerate(zip(x.shape, list(gshape)[lead:])):
            if dx == dg and dx is not None and dx != "":
                continue
            if dx == 1:
                axes.append(lead + i)
            else:
                unknown = True
        if unknown:
            return self._unbroadcast_dynamic(g, x, lead)
        if not axes:
            return g
        g = self.reduce("ReduceSum", g, axes, keepdims=True)
        return self.squeeze(g, list(range(lead))) if lead else g

    def _unbroadcast_dynamic(self, g, x, lead: int):
        if self.opset < 13:
            raise OnnxplainError(f"broadcast to '{x.name}' with unknown dimensions needs opset >= 13")
        sx = self.Shape(x)
        padded = self.Concat(self.ints([1] * lead), sx, axis=0) if lead else sx
        axes = self.Reshape(self.NonZero(self.Not(self.Equal(padded, self.Shape(g)))), self.ints([-1]))
        summed = self.emit("ReduceSum", g, axes, keepdims=1, noop_with_empty_axes=1)
        return self.Reshape(summed, sx)


def static_shape(t) -> list[int] | None:
    """The shape of ``t`` when every dimension is a known int, else None."""
    shape = getattr(t, "shape", None)
    if shape is None or not all(isinstance(d, int) and d >= 0 for d in shape):
        return None
    return list(shape)


def rank(t) -> int | None:
    shape = getattr(t, "shape", None)
    return None if shape is None else len(shape)
