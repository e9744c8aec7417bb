"""VJPs of elementwise activations; the derivative at a kink follows PyTorch (Relu'(0) = 0)."""
from __future__ import annotations

from . import vjp


@vjp("Relu")
def relu(b, node, g):
    x = node.inputs[0]
    return [b.Where(b.Greater(x, b.const(0, like=x)), g[0], b.const(0, like=g[0]))]
