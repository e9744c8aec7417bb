"""VJPs of the normalisation layers.

Layer, instance and group normalisation (and BatchNormalization in training mode) normalise ``x``
over some axes with its own statistics, x_hat = (x - mean) / sigma, sigma = sqrt(var + eps), so the
cotangent flows through the mean and the variance too (Ioffe & Szegedy 2015, eq. in section 3):

    dx = (g_hat - mean(g_hat) - x_hat mean(g_hat x_hat)) / sigma,   g_hat = g * scale

BatchNormalization in inference mode uses its running statistics: an affine map per channel.
Scale and bias get their cotangents too, when they are not constants.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from onnx.helper import np_dtype_to_tensor_dtype

from onnxplain.errors import OnnxplainError, ShapeError
from onnxplain.graph.builder import np_dtype, rank
from onnxplain.rules.vjp import attr, vjp


def _wanted(t) -> bool:
    """Does input ``t`` need a cotangent (present, and not a constant)?"""
    return t is not None and bool(t.name) and not isinstance(t, gs.Constant)


def _rank(node, x):
    r = rank(x)
    if r is None:
        raise ShapeError(f"{node.op} '{node.name}': the rank of its input must be known")
    return r


def _per_channel(b, t, r):
    """A [C] parameter shaped [C, 1, ..., 1] to broadcast against [N, C, *spatial]."""
    return b.Reshape(t, b.ints([-1] + [1] * (r - 2)))


def standardized(b, x, axes, eps):
    """(x_hat, 1 / sigma) of ``x`` over ``axes``: x_hat = (x - mean) / sqrt(var + eps)."""
    xc = b.Sub(x, b.reduce("ReduceMean", x, axes, keepdims=True))
    var = b.reduce("ReduceMean", b.Mul(xc, xc), axes, keepdims=True)
    inv = b.Reciprocal(b.Sqrt(b.Add(var, b.const(eps, like=x))))
    return b.Mul(xc, inv), inv


def standardized_vjp(b, g_hat, x_hat, inv, axes):
    """dx of x_hat = (x - mean) / sigma over ``axes``, given the cotangent ``g_hat`` of x_hat."""
    m1 = b.reduce("ReduceMean", g_hat, axes, keepdims=True)
    m2 = b.reduce("ReduceMean", b.Mul(g_hat, x_hat), axes, keepdims=True)
    return b.Mul(b.Sub(b.Sub(g_hat, m1), b.Mul(x_hat, m2)), inv)


@vjp("BatchNormalization")
def batch_normalization(b, node, g):
    """Inference: y = scale (x - mean) / sqrt(var + eps) + B per channel, so dx = g scale / sqrt(var + eps).
    training_mode=1 normalises with the batch's own statistics over (N, *spatial) instead."""
    x, scale, bias, mean, var = node.inputs[:5]
    r = _rank(node, x)
    eps = float(attr(node, "epsilon", 1e-5))
    others = [a for a in range(r) if a != 1]
    gy = g[0]
    if attr(node, "training_mode", 0):
        x_hat, inv = standardized(b, x, others, eps)
        dx = standardized_vjp(b, b.Mul(gy, _per_channel(b, scale, r)), x_hat, inv, others)
        return [
            dx,
            b.reduce("ReduceSum", b.Mul(gy, x_hat), others, keepdims=False) if _wanted(scale) else None,
            b.reduce("ReduceSum", gy, others, keepdims=False) if _wanted(bias) else None,
            None,
            None,
        ]
    inv = b.Reciprocal(b.Sqrt(b.Add(var, b.const(eps, like=var))))  # [C]
    k = b.Mul(scale, inv)
    dx = b.Mul(gy, _per_channel(b, k, r))
    grads = [dx, None, None, None, None]
    if _wanted(scale) or _wanted(var):
        x_hat = b.Mul(b.Sub(x, _per_channel(b, mean, r)), _per_channel(b, inv, r))
        gxh = b.reduce("ReduceSum", b.Mul(gy, x_hat), others, keepdims=False)  # sum g x_hat, [C]
        grads[1] = gxh if _wanted(scale) else None
        # d/dvar of scale (x - mean) (var + eps)^(-1/2) = -scale x_hat / (2 (var + eps))
        grads[4] = b.Mul(b.Mul(gxh, k), b.Mul(inv, b.const(-0.5, like=inv))) if _wanted(var) else None
    if _wanted(bias) or _wanted(mean):
        gsum = b.reduce("ReduceSum", gy, others, keepdims=False)
        grads[2] = gsum if _wanted(bias) else None
        grads[3] = b.Neg(b.Mul(gsum, k)) if _wanted(mean) else None
    return grads


@vjp("LayerNormalization")
def layer_normalization(b, node, g):
    """y = x_hat scale + B with x_hat normalised over the axes from ``axis`` on. The optional Mean and
    InvStdDev outputs pass their cotangents too: d mean = 1/n, d (1/sigma) = -x_hat / (n sigma^2)."""
    x, scale = node.inputs[0], node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    r = _rank(node, x)
    axes = list(range(attr(node, "axis", -1) % r, r))
    x_hat, inv = standardized(b, x, axes, float(attr(node, "epsilon", 1e-5)))
    grads = [None, None, None][: len(node.inputs)]
    terms = []
    if g[0] is not None:
        terms.append(standardized_vjp(b, b.Mul(g[0], scale), x_hat, inv, axes))
        out = node.outputs[0].shape
        grads[1] = b.unbroadcast(b.Mul(g[0], x_hat), scale, out) if _wanted(scale) else None
        if _wanted(bias):
            grads[2] = b.unbroadcast(g[0], bias, out)
    if any(t is not None for t in g[1:]):
        to = np_dtype_to_tensor_dtype(np_dtype(x))
        n = b.Div(b.Cast(b.Size(x), to=to), b.Cast(b.Size(inv), to=to))  # elements per normalised group
    if len(g) > 1 and g[1] is not None:
        terms.append(b.Div(b.Expand(g[1], b.Shape(x)), n))
    if len(g) > 2 and g[2] is not None:
        terms.append(b.Neg(b.Div(b.Mul(b.Mul(g[2], b.Mul(inv, inv)), x_hat), n)))
    grads[0] = terms[0] if len(terms) == 1 else b.Sum(*terms)
    return grads


@vjp("InstanceNormalization")
def instance_normalization(b, node, g):
    """y = x_hat scale + B per channel, x_hat normalised over the spatial axes of each (n, c)."""
    x, scale, bias = node.inputs
    r = _rank(node, x)
    spatial, others = list(range(2, r)), [a for a in range(r) if a != 1]
    x_hat, inv = standardized(b, x, spatial, float(attr(node, "epsilon", 1e-5)))
    dx = standardized_vjp(b, b.Mul(g[0], _per_channel(b, scale, r)), x_hat, inv, spatial)
    return [
        dx,
        b.reduce("ReduceSum", b.Mul(g[0], x_hat), others, keepdims=False) if _wanted(scale) else None,
        b.reduce("ReduceSum", g[0], others, keepdims=False) if _wanted(bias) else None,
    ]


@vjp("GroupNormalization")
def group_normalization(b, node, g):
    """x is normalised over each group of C / num_groups channels and the spatial axes; scale and
    bias are per channel (opset 21; onnx's checker rejects the deprecated opset-18 form)."""
    x, scale, bias = node.inputs
    r = _rank(node, x)
    if b.opset < 21:
        raise OnnxplainError(f"GroupNormalization '{node.name}': the deprecated opset-18 form is not supported")
    to_groups = b.ints([0, int(attr(node, "num_groups")), -1])
    x_hat, inv = standardized(b, b.Reshape(x, to_groups), [2], float(attr(node, "epsilon", 1e-5)))
    g_hat = b.Reshape(b.Mul(g[0], _per_channel(b, scale, r)), to_groups)
    dx = b.Reshape(standardized_vjp(b, g_hat, x_hat, inv, [2]), b.Shape(x))
    others = [a for a in range(r) if a != 1]
    return [
        dx,
        b.reduce("ReduceSum", b.Mul(g[0], b.Reshape(x_hat, b.Shape(x))), others, keepdims=False)
        if _wanted(scale)
        else None,
        b.reduce("ReduceSum", g[0], others, keepdims=False) if _wanted(bias) else None,
    ]


@vjp("MeanVarianceNormalization")
def mean_variance_normalization(b, node, g):
    """The spec's function: y = (x - mean) / (s + 1e-9), s = sqrt(mean(x^2) - mean^2) over ``axes``.
    With k = 1 / (s + 1e-9): dx = k (g - mean(g)) - (k^2 / s) (x - mean) mean(g (x - mean))."""
    x = node.inputs[0]
    axes = list(attr(node, "axes") or [0, 2, 3])
    xc = b.Sub(x, b.reduce("ReduceMean", x, axes, keepdims=True))
    s = b.Sqrt(b.reduce("ReduceMean", b.Mul(xc, xc), axes, keepdims=True))
    k = b.Reciprocal(b.Add(s, b.const(1e-9, like=x)))
    gy = g[0]
    first = b.Mul(k, b.Sub(gy, b.reduce("ReduceMean", gy, axes, keepdims=True)))
    second = b.Mul(b.Div(b.Mul(k, k), s), b.Mul(xc, b.reduce("ReduceMean", b.Mul(gy, xc), axes, keepdims=True)))
    return [b.Sub(first, second)]


def _channel_window_sum(b, t, like, before, after, size):
    """s[:, c] = sum of t[:, c - before .. c + after] (zero outside), as a Conv over the channel axis;
    ``t`` is shaped like ``like``."""
    c = like.shape[1] if like.shape is not None else None
    if isinstance(c, int):
        target = b.ints([0, 1, c, -1])
    else:
        target = b.Concat(b.ints([0, 1]), b.shape_of(t, 1, 2), b.ints([-1]), axis=0)
    flat = b.Reshape(t, target)  # [N, 1, C, rest]
    ones = b.const(np.ones([1, 1, size, 1]), like=t)
    summed = b.Conv(flat, ones, kernel_shape=[size, 1], pads=[before, 0, after, 0])
    return b.Reshape(summed, b.Shape(t))


@vjp("LRN")
def lrn(b, node, g):
    """y = x d^-beta, d = bias + alpha / size * (sum of x^2 over the channel window):
    dx = g d^-beta - (2 alpha beta / size) x * (window-transposed sum of g x d^(-beta-1))."""
    x = node.inputs[0]
    size = int(attr(node, "size"))
    alpha, beta = float(attr(node, "alpha", 1e-4)), float(attr(node, "beta", 0.75))
    bias = float(attr(node, "bias", 1.0))
    lo, hi = (size - 1) // 2, size // 2  # channels before and after c in c's window
    d = b.Add(
        b.Mul(_channel_window_sum(b, b.Mul(x, x), x, lo, hi, size), b.const(alpha / size, like=x)),
        b.const(bias, like=x),
    )
    d_beta = b.Pow(d, b.const(-beta, like=x))
    gy = g[0]
    inner = b.Div(b.Mul(b.Mul(gy, x), d_beta), d)
    back = _channel_window_sum(b, inner, x, hi, lo, size)
    return [b.Sub(b.Mul(gy, d_beta), b.Mul(b.Mul(x, back), b.const(2 * alpha * beta / size, like=x)))]
