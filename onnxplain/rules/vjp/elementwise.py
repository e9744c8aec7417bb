"""VJPs of elementwise arithmetic (numpy broadcasting is undone by the walker)."""

from __future__ import annotations

import onnx

from onnxplain.graph.builder import np_dtype
from onnxplain.rules.vjp import vjp


def _x(node, i=0):
    return node.inputs[i]


def _y(node):
    return node.outputs[0]


@vjp("Add", "Sum", broadcast=True)
def add(b, node, g):
    return [g[0]] * len(node.inputs)


@vjp("Sub", broadcast=True)
def sub(b, node, g):
    return [g[0], b.Neg(g[0])]


@vjp("Mul", broadcast=True)
def mul(b, node, g):
    x, y = node.inputs
    return [b.Mul(g[0], y), b.Mul(g[0], x)]


@vjp("Div", broadcast=True)
def div(b, node, g):
    """d(x/y) = g/y dx - g (x/y)/y dy."""
    x, y = node.inputs
    gx = b.Div(g[0], y)
    return [gx, b.Neg(b.Mul(gx, _y(node)))]


@vjp("Neg")
def neg(b, node, g):
    return [b.Neg(g[0])]


@vjp("Pow", broadcast=True)
def pow_(b, node, g):
    """d(x^p) = g p x^(p-1) dx + g x^p ln(x) dp."""
    x, p = node.inputs
    if np_dtype(p) != np_dtype(x):
        p = b.Cast(p, to=onnx.helper.np_dtype_to_tensor_dtype(np_dtype(x)))
    gx = b.Mul(g[0], b.Mul(p, b.Pow(x, b.Sub(p, b.const(1, like=x)))))
    gp = b.Mul(g[0], b.Mul(_y(node), b.Log(x)))
    return [gx, gp]


@vjp("Sqrt")
def sqrt(b, node, g):
    return [b.Div(g[0], b.Mul(_y(node), b.const(2, like=_y(node))))]


@vjp("Exp")
def exp(b, node, g):
    return [b.Mul(g[0], _y(node))]


@vjp("Log")
def log(b, node, g):
    return [b.Div(g[0], _x(node))]


@vjp("Abs")
def abs_(b, node, g):
    """Sign(0) = 0, as in PyTorch."""
    return [b.Mul(g[0], b.Sign(_x(node)))]


@vjp("Reciprocal")
def reciprocal(b, node, g):
    y = _y(node)
    return [b.Neg(b.Mul(g[0], b.Mul(y, y)))]


@vjp("Identity", "Dropout")
def identity(b, node, g):
    return [g[0]]


@vjp("Cast", "CastLike")
def cast(b, node, g):
    """Between float types the cotangent is cast back; other casts are off the path."""
    return [b.Cast(g[0], to=onnx.helper.np_dtype_to_tensor_dtype(np_dtype(_x(node)))), None]


@vjp("Where", broadcast=True)
def where(b, node, g):
    c = node.inputs[0]
    zero = b.const(0, like=g[0])
    return [None, b.Where(c, g[0], zero), b.Where(c, zero, g[0])]


@vjp("Max", "Min", broadcast=True)
def max_min(b, node, g):
    """Variadic, broadcasting Max/Min: the gradient goes to the inputs equal to the result,
    split evenly between ties: dx_i = g [x_i = y] / sum_j [x_j = y].

    For two inputs this is PyTorch's ``torch.maximum``/``torch.minimum`` (``grad / 2`` on a tie).
    """
    if len(node.inputs) == 1:
        return [g[0]]
    y = _y(node)
    to = onnx.helper.np_dtype_to_tensor_dtype(np_dtype(y))
    hits = [b.Cast(b.Equal(x, y), to=to) for x in node.inputs]
    share = b.Div(g[0], b.Sum(*hits))
    return [b.Mul(share, h) for h in hits]
