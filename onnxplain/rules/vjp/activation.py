"""VJPs of elementwise activations and of Softmax/LogSoftmax.

At a kink the derivative follows PyTorch's autograd (``torch/csrc/autograd/FunctionsManual.cpp``
and ``derivatives.yaml``), so that exported gradients match a PyTorch model's:

* Relu'(0) = 0, ThresholdedRelu'(alpha) = 0 (``threshold_backward``: ``x <= t ? 0 : g``);
* LeakyRelu'(0) = PRelu'(0) = slope, Elu'(0) = alpha, Selu'(0) = gamma * alpha, Celu'(0) = 1
  (the negative branch is taken at 0, as in ``leaky_relu_backward`` / ``elu_backward``);
* Clip passes the gradient on the open interval ``min < x < max``, as PyTorch's ``nn.ReLU6`` and
  ``nn.Hardtanh`` (``hardtanh_backward``) and TensorFlow's ``relu6`` do; Clip(0, 6) is how both
  export ReLU6. (``torch.clamp`` alone uses the closed interval.) Both Relu and Clip read the
  *output*, so that onnxruntime can still fuse them into the Conv before them;
* HardSigmoid passes ``alpha`` only where ``0 < alpha x + beta < 1`` (open, ``hardsigmoid_backward``);
* HardSwish uses ``x / 3 + 1/2`` on the closed interval ``[-3, 3]`` (``hardswish_backward``),
  so HardSwish'(-3) = -1/2 and HardSwish'(3) = 3/2.
"""

from __future__ import annotations

import math

import onnx

from onnxplain.errors import OnnxplainError, ShapeError
from onnxplain.graph.builder import np_dtype, rank
from onnxplain.rules.vjp import attr, vjp

SELU_ALPHA = 1.67326319217681884765625  # ONNX Selu defaults
SELU_GAMMA = 1.05070102214813232421875


def _x(node, i=0):
    return node.inputs[i]


def _y(node):
    return node.outputs[0]


def _c(b, v, like):
    return b.const(v, like=like)


def _where_pos(b, x, pos, neg):
    """``x > 0 ? pos : neg``."""
    return b.Where(b.Greater(x, _c(b, 0, x)), pos, neg)


@vjp("Relu")
def relu(b, node, g):
    """Relu'(x) = [x > 0] = [y > 0]."""
    y = _y(node)
    return [b.mask(g[0], b.Greater(y, _c(b, 0, y)))]


@vjp("LeakyRelu")
def leaky_relu(b, node, g):
    """LeakyRelu'(x) = 1 if x > 0 else alpha (default 0.01)."""
    x = _x(node)
    alpha = _c(b, attr(node, "alpha", 0.01), x)
    return [_where_pos(b, x, g[0], b.Mul(g[0], alpha))]


@vjp("PRelu", broadcast=True)
def prelu(b, node, g):
    """y = x if x > 0 else slope x:  dx = g [x > 0] + g slope [x <= 0],  dslope = g x [x <= 0].

    ``slope`` broadcasts to ``x`` (unidirectionally); the walker sums ``dslope`` back to its shape.
    """
    x, slope = node.inputs
    zero = _c(b, 0, g[0])
    return [_where_pos(b, x, g[0], b.Mul(g[0], slope)), _where_pos(b, x, zero, b.Mul(g[0], x))]


@vjp("Elu")
def elu(b, node, g):
    """Elu'(x) = 1 if x > 0 else alpha e^x = y + alpha."""
    x, y = _x(node), _y(node)
    alpha = _c(b, attr(node, "alpha", 1.0), x)
    return [_where_pos(b, x, g[0], b.Mul(g[0], b.Add(y, alpha)))]


@vjp("Selu")
def selu(b, node, g):
    """Selu'(x) = gamma if x > 0 else gamma alpha e^x = y + gamma alpha."""
    x, y = _x(node), _y(node)
    alpha, gamma = attr(node, "alpha", SELU_ALPHA), attr(node, "gamma", SELU_GAMMA)
    return [_where_pos(b, x, b.Mul(g[0], _c(b, gamma, x)), b.Mul(g[0], b.Add(y, _c(b, gamma * alpha, x))))]


@vjp("Celu")
def celu(b, node, g):
    """Celu(x) = max(0, x) + min(0, alpha (e^(x/alpha) - 1)):  Celu'(x) = 1 if x > 0 else e^(x/alpha)."""
    x = _x(node)
    alpha = _c(b, attr(node, "alpha", 1.0), x)
    return [_where_pos(b, x, g[0], b.Mul(g[0], b.Exp(b.Div(x, alpha))))]


@vjp("ThresholdedRelu")
def thresholded_relu(b, node, g):
    """y = x if x > alpha else 0:  dy = [x > alpha]."""
    x = _x(node)
    keep = b.Greater(x, _c(b, attr(node, "alpha", 1.0), x))
    return [b.Where(keep, g[0], _c(b, 0, g[0]))]


@vjp("Clip", broadcast=True)
def clip(b, node, g):
    """y = min(max(x, lo), hi) (opset 11+: lo, hi optional scalar inputs).

    dx = g [lo < x < hi] = g [lo < y < hi] (``hardtanh_backward``);
    dlo = g [x < lo and lo < hi];  dhi = g [x > hi or hi < lo] (ONNX gives ``hi`` when lo > hi).
    """
    x, y = _x(node), _y(node)
    lo = node.inputs[1] if len(node.inputs) > 1 and node.inputs[1].name else None
    hi = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
    zero = _c(b, 0, g[0])
    inside = None
    if lo is not None:
        inside = b.Greater(y, lo)
    if hi is not None:
        below_hi = b.Less(y, hi)
        inside = below_hi if inside is None else b.And(inside, below_hi)
    gx = g[0] if inside is None else b.mask(g[0], inside)
    glo = ghi = None
    if lo is not None:
        takes_lo = b.Less(x, lo) if hi is None else b.And(b.Less(x, lo), b.Less(lo, hi))
        glo = b.Where(takes_lo, g[0], zero)
    if hi is not None:
        takes_hi = b.Greater(x, hi) if lo is None else b.Or(b.Greater(x, hi), b.Less(hi, lo))
        ghi = b.Where(takes_hi, g[0], zero)
    return [gx, glo, ghi][: len(node.inputs)]


@vjp("Sigmoid")
def sigmoid(b, node, g):
    """sigma' = y (1 - y)."""
    y = _y(node)
    return [b.Mul(g[0], b.Mul(y, b.Sub(_c(b, 1, y), y)))]


@vjp("HardSigmoid")
def hard_sigmoid(b, node, g):
    """y = max(0, min(1, alpha x + beta)):  dy = alpha where 0 < y < 1 (open interval, as PyTorch).
    The mask is a cast comparison times g (no Where: see :meth:`Builder.mask`)."""
    y = _y(node)
    inside = b.And(b.Greater(y, _c(b, 0, y)), b.Less(y, _c(b, 1, y)))
    return [b.mask(b.Mul(g[0], _c(b, attr(node, "alpha", 0.2), y)), inside)]


@vjp("HardSwish")
def hard_swish(b, node, g):
    """y = x max(0, min(1, x/6 + 1/2)):  dy = 0 for x < -3, x/3 + 1/2 for -3 <= x <= 3, 1 for x > 3,
    written without Where as  (x/3 + 1/2) ([x >= -3] - [x > 3]) + [x > 3]  (18% faster in onnxruntime 1.31
    on a [1, 240, 28, 28] tensor than two nested Wheres; the same values)."""
    x = _x(node)
    dtype = onnx.helper.np_dtype_to_tensor_dtype(np_dtype(x))
    at_least = b.GreaterOrEqual(x, _c(b, -3, x)) if b.opset >= 12 else b.Not(b.Less(x, _c(b, -3, x)))
    lo = b.Cast(at_least, to=dtype)
    hi = b.Cast(b.Greater(x, _c(b, 3, x)), to=dtype)
    inner = b.Add(b.Div(x, _c(b, 3, x)), _c(b, 0.5, x))
    return [b.Mul(g[0], b.Add(b.Mul(inner, b.Sub(lo, hi)), hi))]


@vjp("Tanh")
def tanh(b, node, g):
    """tanh' = 1 - y^2."""
    y = _y(node)
    return [b.Mul(g[0], b.Sub(_c(b, 1, y), b.Mul(y, y)))]


@vjp("Softplus")
def softplus(b, node, g):
    """Softplus(x) = ln(1 + e^x):  Softplus' = sigma(x)."""
    return [b.Mul(g[0], b.Sigmoid(_x(node)))]


@vjp("Softsign")
def softsign(b, node, g):
    """Softsign(x) = x / (1 + |x|):  Softsign' = 1 / (1 + |x|)^2."""
    x = _x(node)
    d = b.Add(_c(b, 1, x), b.Abs(x))
    return [b.Div(g[0], b.Mul(d, d))]


@vjp("Erf")
def erf(b, node, g):
    """erf'(x) = 2 / sqrt(pi) e^(-x^2)."""
    x = _x(node)
    return [b.Mul(g[0], b.Mul(_c(b, 2 / math.sqrt(math.pi), x), b.Exp(b.Neg(b.Mul(x, x)))))]


@vjp("Gelu")
def gelu(b, node, g):
    """Gelu (opset 20).

    approximate="none":  y = x Phi(x),  Phi(x) = (1 + erf(x / sqrt 2)) / 2,  y' = Phi(x) + x phi(x),
    phi(x) = e^(-x^2/2) / sqrt(2 pi);
    approximate="tanh":  y = x (1 + t) / 2,  t = tanh(u),  u = sqrt(2/pi) (x + 0.044715 x^3),
    y' = (1 + t) / 2 + x (1 - t^2) / 2 * sqrt(2/pi) (1 + 3 * 0.044715 x^2).
    u is emitted as x (k + k 0.044715 x^2), k = sqrt(2/pi), and 1/2 factored out: spelled as in the
    formula, or with 0.5 x, onnxruntime 1.31 merges these nodes with a decomposed GELU's in the forward
    (common subexpressions), then its FastGeluFusion drops a node the backward still reads.
    """
    x = _x(node)
    half, one = _c(b, 0.5, x), _c(b, 1, x)
    x2 = b.Mul(x, x)
    approx = attr(node, "approximate", "none")
    approx = approx.decode() if isinstance(approx, bytes) else approx
    if approx == "tanh":
        k = math.sqrt(2 / math.pi)
        t = b.Tanh(b.Mul(x, b.Add(_c(b, k, x), b.Mul(_c(b, k * 0.044715, x), x2))))
        du = b.Mul(_c(b, k, x), b.Add(one, b.Mul(_c(b, 3 * 0.044715, x), x2)))
        d = b.Mul(half, b.Add(b.Add(one, t), b.Mul(x, b.Mul(b.Sub(one, b.Mul(t, t)), du))))
    elif approx == "none":
        cdf = b.Mul(half, b.Add(one, b.Erf(b.Mul(x, _c(b, 1 / math.sqrt(2), x)))))
        pdf = b.Mul(_c(b, 1 / math.sqrt(2 * math.pi), x), b.Exp(b.Mul(x2, _c(b, -0.5, x))))
        d = b.Add(cdf, b.Mul(x, pdf))
    else:
        raise OnnxplainError(f"Gelu '{node.name}': unknown approximate='{approx}'")
    return [b.Mul(g[0], d)]


@vjp("Mish")
def mish(b, node, g):
    """Mish(x) = x tanh(softplus(x)):  Mish' = t + x sigma(x) (1 - t^2),  t = tanh(softplus(x))."""
    x = _x(node)
    t = b.Tanh(b.Softplus(x))
    d = b.Add(t, b.Mul(b.Mul(x, b.Sigmoid(x)), b.Sub(_c(b, 1, x), b.Mul(t, t))))
    return [b.Mul(g[0], d)]


@vjp("Swish")
def swish(b, node, g):
    """Swish(x) = x sigma(alpha x) (opset 24):  Swish' = s + alpha y (1 - s),  s = sigma(alpha x), y = x s
    (the output, which the forward pass has computed: SiLU's backward is 5 elementwise ops, not 7)."""
    x, y = _x(node), _y(node)
    alpha = float(attr(node, "alpha", 1.0))
    s = b.Sigmoid(x if alpha == 1 else b.Mul(_c(b, alpha, x), x))
    ay = y if alpha == 1 else b.Mul(_c(b, alpha, y), y)
    return [b.Mul(g[0], b.Add(s, b.Mul(ay, b.Sub(_c(b, 1, x), s))))]


@vjp("Sin")
def sin(b, node, g):
    return [b.Mul(g[0], b.Cos(_x(node)))]


@vjp("Cos")
def cos(b, node, g):
    return [b.Neg(b.Mul(g[0], b.Sin(_x(node))))]


def _softmax_axes(b, node):
    """The reduced axes: ``[axis]`` from opset 13 (default -1); before 13 the input is coerced to
    2-D at ``axis`` (default 1), so every axis from ``axis`` on is reduced."""
    if b.opset >= 13:
        return [attr(node, "axis", -1)]
    axis, r = attr(node, "axis", 1), rank(_x(node))
    if r is None:
        raise ShapeError(f"{node.op} '{node.name}' (opset {b.opset}) needs an input of known rank")
    return list(range(axis % r if r else 0, r))


@vjp("Softmax")
def softmax(b, node, g):
    """dx = y (g - sum(g y)), the sum over the softmax axes."""
    y = _y(node)
    s = b.reduce("ReduceSum", b.Mul(g[0], y), _softmax_axes(b, node), keepdims=True)
    return [b.Mul(y, b.Sub(g[0], s))]


@vjp("LogSoftmax")
def log_softmax(b, node, g):
    """dx = g - e^y sum(g), the sum over the softmax axes."""
    y = _y(node)
    s = b.reduce("ReduceSum", g[0], _softmax_axes(b, node), keepdims=True)
    return [b.Sub(g[0], b.Mul(b.Exp(y), s))]
