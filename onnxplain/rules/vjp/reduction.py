"""VJPs of the Reduce* family.

``axes`` is an attribute before opset 13 (ReduceSum) or 18 (the others) and an input after; no axes
means every axis, unless ``noop_with_empty_axes`` makes the node an identity. Each rule first
brings the cotangent ``g`` (and, where needed, the output ``y``) back to the kept-dims shape, in
which it broadcasts against ``x``.

ReduceMax/ReduceMin split the cotangent evenly among tied extrema, as PyTorch's amax/amin do
(torch.max(dim) would give it all to one index).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxplain.errors import OnnxplainError, ShapeError
from onnxplain.graph.builder import np_dtype, rank
from onnxplain.rules.vjp import attr, vjp


def reduced_axes(node) -> list[int] | None:
    """The sorted, non-negative reduced axes of a Reduce* node; None when it reduces nothing."""
    x = node.inputs[0]
    r = rank(x)
    if r is None:
        raise ShapeError(f"{node.op} '{node.name}': the rank of its input must be known")
    axes = attr(node, "axes")
    if len(node.inputs) > 1 and node.inputs[1].name:
        t = node.inputs[1]
        if not isinstance(t, gs.Constant):
            raise OnnxplainError(f"{node.op} '{node.name}': its axes must be a constant")
        axes = [int(a) for a in np.asarray(t.values).ravel()]
    if not axes:
        if attr(node, "noop_with_empty_axes", 0):
            return None
        axes = range(r)
    return sorted({int(a) % r for a in axes})


def kept(b, node, t, axes):
    """``t`` (shaped like the node's output) with the reduced axes put back as size-1 dims."""
    return t if attr(node, "keepdims", 1) else b.unsqueeze(t, axes)


def _cast_like(b, t, like):
    return b.Cast(t, to=onnx.helper.np_dtype_to_tensor_dtype(np_dtype(like)))


def _reduction(fn):
    """Decorator: hand ``fn(b, node, x, gk, axes)`` the kept-dims cotangent; noop nodes pass ``g``."""

    def rule(b, node, g):
        axes = reduced_axes(node)
        if axes is None:
            return [g[0]]
        return [fn(b, node, node.inputs[0], kept(b, node, g[0], axes), axes)]

    rule.__name__ = fn.__name__
    rule.__doc__ = fn.__doc__
    return rule


@vjp("ReduceSum")
@_reduction
def reduce_sum(b, node, x, gk, axes):
    """dx = g, broadcast over the reduced axes."""
    return b.Expand(gk, b.Shape(x))


@vjp("ReduceMean")
@_reduction
def reduce_mean(b, node, x, gk, axes):
    """dx = g / n, broadcast; n = the number of reduced elements."""
    dims = [x.shape[a] for a in axes]
    if all(isinstance(d, int) for d in dims):
        scale = b.const(1.0 / float(np.prod(dims)), like=gk)
    else:
        scale = b.Div(_cast_like(b, b.Size(node.outputs[0]), gk), _cast_like(b, b.Size(x), gk))
    return b.Expand(b.Mul(gk, scale), b.Shape(x))


@vjp("ReduceSumSquare")
@_reduction
def reduce_sum_square(b, node, x, gk, axes):
    """y = sum x^2: dx = 2 x g."""
    return b.Mul(b.Mul(gk, b.const(2, like=gk)), x)


@vjp("ReduceL1")
@_reduction
def reduce_l1(b, node, x, gk, axes):
    """y = sum |x|: dx = g sign(x) (0 at x = 0, as PyTorch)."""
    return b.Mul(gk, b.Sign(x))


@vjp("ReduceL2")
@_reduction
def reduce_l2(b, node, x, gk, axes):
    """y = sqrt(sum x^2): dx = g x / y, and 0 where y = 0 (as PyTorch's norm)."""
    yk = kept(b, node, node.outputs[0], axes)
    zero = b.const(0, like=yk)
    at_zero = b.Equal(yk, zero)
    return b.Mul(b.Where(at_zero, zero, b.Div(gk, b.Where(at_zero, b.const(1, like=yk), yk))), x)


@vjp("ReduceLogSum")
@_reduction
def reduce_log_sum(b, node, x, gk, axes):
    """y = log sum x: dx = g / sum x = g exp(-y), broadcast."""
    yk = kept(b, node, node.outputs[0], axes)
    return b.Expand(b.Mul(gk, b.Exp(b.Neg(yk))), b.Shape(x))


@vjp("ReduceLogSumExp")
@_reduction
def reduce_log_sum_exp(b, node, x, gk, axes):
    """y = log sum exp x: dx = g softmax(x) = g exp(x - y)."""
    return b.Mul(gk, b.Exp(b.Sub(x, kept(b, node, node.outputs[0], axes))))


@vjp("ReduceProd")
@_reduction
def reduce_prod(b, node, x, gk, axes):
    """y = prod x: dx = g y / x (defined for nonzero x only)."""
    return b.Div(b.Mul(gk, kept(b, node, node.outputs[0], axes)), x)


@vjp("ReduceMax", "ReduceMin")
@_reduction
def reduce_extremum(b, node, x, gk, axes):
    """dx = g [x = y] / #{x = y}: ties share the cotangent evenly (PyTorch's amax/amin)."""
    hit = _cast_like(b, b.Equal(x, kept(b, node, node.outputs[0], axes)), x)
    return b.Mul(hit, b.Div(gk, b.reduce("ReduceSum", hit, axes, keepdims=True)))
