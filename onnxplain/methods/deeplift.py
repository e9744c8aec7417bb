"""DeepLIFT with the rescale rule (Shrikumar et al. 2017, arXiv:1704.02685).

``deeplift``: attribution = (x - x') * m_x, where x' is the ``baseline`` input (default zeros,
broadcast to x's shape) and m_x the multipliers carried back by the rules of rules/deeplift.toml
(see :mod:`onnxplain.rules.deeplift`). The seed is the gradient's, so completeness reads

    sum(attribution) = sum(seed * (logits(x) - logits(x'))).

The baseline's activations come from a second copy of the forward graph that shares the weights
(not a concatenation along the batch axis, which models with a fixed batch of 1 would reject).
"""

from __future__ import annotations

import numpy as np

from onnxplain.errors import ShapeError


def deeplift(ctx):
    b, x = ctx.b, ctx.x
    if x.shape is None:
        raise ShapeError(f"deeplift needs the rank of input '{x.name}'")
    r = len(x.shape)
    baseline = ctx.add_input("baseline", x.dtype, [None] * r, default=np.zeros([1] * r))
    ref_x = b.Expand(baseline, b.Shape(x))
    ref_x.dtype, ref_x.shape = x.dtype, list(x.shape)
    mapping, _ = ctx.clone_forward({x.name: ref_x}, x.shape[0])  # same shapes as x: keep the batch dim
    rules = ctx.rules("deeplift", ref=mapping)
    m = ctx.backward(rules=rules, nodes=ctx.forward_nodes)
    return b.Mul(b.Sub(x, ref_x), m), x.shape


HEADS = {"deeplift": deeplift}
