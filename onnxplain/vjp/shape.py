"""VJPs of shape-only ops: the cotangent is moved back, never changed."""
from __future__ import annotations

from . import vjp


@vjp("Reshape", "Flatten")
def reshape(b, node, g):
    """Reshape the cotangent back to the input's shape."""
    return [b.Reshape(g[0], b.Shape(node.inputs[0])), None]
