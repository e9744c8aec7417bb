"""DeepLIFT with the rescale rule (Shrikumar et al. 2017, arXiv:1704.02685).

``deeplift``: attribution = (x - x') * m_x, where x' is the ``baseline`` input (default zeros,
broadcast to x's shape) and m_x the multipliers carried back by the rules of rules/deeplift.toml
(see :mod:`onnxplain.rules.deeplift`). The seed is the gradient's, so completeness reads

    sum(attribution) = sum(seed * (logits(x) - logits(x'))).

The baseline's activations come from a second copy of the forward graph that shares the weights
(not a concatenation along the batch axis, which models with a fixed batch of 1 would reject).
By default the baseline is zeros of one item's shape, written into the graph: that copy then reads
only constants, and onnxruntime's constant folding computes it once when the session starts
(ResNet-18: 53 convolutions per run become 33). ``Options(baseline_input=True)`` (the API does
this when a ``baseline`` is given; ``onnxplain export --baseline-input``), or an input whose item
shape is not static, keeps ``baseline`` as an input and runs the copy on every call.
"""

from __future__ import annotations

import numpy as np

from onnxplain.errors import ShapeError


def deeplift(ctx):
    b, x = ctx.b, ctx.x
    if x.shape is None:
        raise ShapeError(f"deeplift needs the rank of input '{x.name}'")
    r = len(x.shape)
    item = list(x.shape[1:])
    fixed_batch = isinstance(x.shape[0], int) and x.shape[0] > 1  # its copy would rename equal dims to 1
    if ctx.options.baseline_input or fixed_batch or not all(isinstance(d, int) and d > 0 for d in item):
        baseline = ctx.add_input("baseline", x.dtype, [None] * r, default=np.zeros([1] * r))
        ref_x, batch = b.Expand(baseline, b.Shape(x)), x.shape[0]  # same shapes as x: keep the batch dim
    else:  # one item of zeros: a constant, so the copy below is folded; [1, ...] broadcasts against x
        ref_x, batch = b.Expand(b.const(np.zeros([1] * r), like=x), b.ints([1, *item])), 1
        ctx.meta["onnxplain.baseline"] = "zeros (fixed; export with --baseline-input to set it)"
    ref_x.dtype, ref_x.shape = x.dtype, [batch, *item]
    mapping, _ = ctx.clone_forward({x.name: ref_x}, batch)
    rules = ctx.rules("deeplift", ref=mapping, ref_one=batch == 1)
    m = ctx.backward(rules=rules, nodes=ctx.forward_nodes)
    return b.Mul(b.Sub(x, ref_x), m), x.shape


HEADS = {"deeplift": deeplift}
