"""Straight-through VJPs of the quantisers: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear.

Rounding has zero derivative almost everywhere, so a quantised model has no useful gradient; the
straight-through estimator (Bengio, Leonard and Courville 2013, arXiv:1308.3432) differentiates
an integer tensor ``q`` on the explained path as the real number ``x / s + zp`` that it rounds
(ONNX spec, QuantizeLinear: ``q = saturate(round(x / s) + zp)``; DequantizeLinear: ``y = (q - zp) s``):

    DequantizeLinear   dq = g s
    QuantizeLinear     dx = g / s   where  qmin <= round(x / s) + zp <= qmax,  else 0

so ``d DQ(Q(x)) / dx = 1`` wherever the quantiser does not saturate, and 0 where it clips: the mask
of PyTorch's ``fake_quantize_per_tensor_affine`` backward, i.e. the interval
``[(qmin - zp) s, (qmax - zp) s]`` widened by the half step that still rounds inside it.
Scales and zero points are constants to the estimator and get no cotangent (DynamicQuantizeLinear's
scale is computed from ``x``, but its range always covers ``x``). The walker lets a quantiser's
integer output carry a cotangent (``CARRIES`` in :mod:`onnxplain.graph.backward`).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from onnxplain.errors import OnnxplainError
from onnxplain.graph.builder import rank
from onnxplain.rules.vjp import attr, vjp

RANGES = {
    TensorProto.INT8: (-128, 127),
    TensorProto.UINT8: (0, 255),
    TensorProto.INT16: (-32768, 32767),
    TensorProto.UINT16: (0, 65535),
    TensorProto.INT4: (-8, 7),
    TensorProto.UINT4: (0, 15),
}


def elem_type(t) -> int | None:
    """The ONNX element type of a graphsurgeon tensor (int4/uint4 have no numpy dtype)."""
    dt = getattr(t, "dtype", None)
    if dt is None or isinstance(dt, int):
        return dt
    return onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dt))


def qrange(node, q) -> tuple[int, int]:
    """(qmin, qmax) of the quantised tensor ``q``; uint8 when its type is unknown and no zero point says."""
    if int(attr(node, "block_size", 0) or 0):
        raise OnnxplainError(f"{node.op} '{node.name}': blocked quantisation (block_size) is not supported")
    t = elem_type(q) or TensorProto.UINT8
    if t not in RANGES:
        raise OnnxplainError(
            f"{node.op} '{node.name}': quantised type {TensorProto.DataType.Name(t)} is not "
            f"supported (int4/8/16 and uint4/8/16 are)"
        )
    return RANGES[t]


def along(b, v, x, axis: int):
    """A per-axis scale or zero point ``v`` ([C]) shaped to broadcast along ``axis`` of ``x``."""
    shape = getattr(v, "shape", None)
    if shape is None or len(shape) == 0 or shape == [1]:
        return v
    r = rank(x)
    if r is None:
        raise OnnxplainError(f"per-axis quantisation of '{x.name}' needs its rank")
    return b.Reshape(v, b.ints([-1 if i == axis % r else 1 for i in range(r)]))


def straight_through(b, g, x, s, zp, qmin: int, qmax: int):
    """``g / s`` where ``qmin <= round(x / s) + zp <= qmax``, else 0."""
    q = b.Round(b.Div(x, s))
    if zp is not None:
        q = b.Add(q, b.Cast(zp, to=onnx.helper.np_dtype_to_tensor_dtype(np.dtype(x.dtype))))
    clipped = b.Or(b.Less(q, b.const(qmin, like=x)), b.Greater(q, b.const(qmax, like=x)))
    return b.mask(b.Div(g, s), b.Not(clipped))


def _zero_point(node):
    return node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None


@vjp("QuantizeLinear")
def quantize_linear(b, node, g):
    x, s = node.inputs[:2]
    zp, axis = _zero_point(node), attr(node, "axis", 1)
    qmin, qmax = qrange(node, node.outputs[0])
    zp = None if zp is None else along(b, zp, x, axis)
    return [straight_through(b, g[0], x, along(b, s, x, axis), zp, qmin, qmax), None, None]


@vjp("DequantizeLinear")
def dequantize_linear(b, node, g):
    q, s = node.inputs[:2]
    qrange(node, q)  # refuses blocked and float8 quantisation
    return [b.Mul(g[0], along(b, s, q, attr(node, "axis", 1))), None, None]


@vjp("DynamicQuantizeLinear")
def dynamic_quantize_linear(b, node, g):
    """uint8 with the scale and zero point of x's range (ONNX spec, DynamicQuantizeLinear)."""
    _, s, zp = node.outputs
    return [straight_through(b, g[0], node.inputs[0], s, zp, 0, 255)]
