"""Guided backpropagation and the deconvnet, as modified rules for ReLU-like ops.

* ``guided`` — Springenberg et al. 2015, "Striving for simplicity" (arXiv:1412.6806): a unit passes
  the cotangent only where its forward input was positive *and* the cotangent is positive. For
  any ReLU-like op this is its true VJP applied to relu(g): Relu -> [y > 0] relu(g); Clip/ReLU6 ->
  [lo < y < hi] relu(g); LeakyRelu/PRelu/Elu/Selu/Celu -> their local slope times relu(g).
* ``deconvnet`` — Zeiler & Fergus 2014, "Visualizing and understanding convolutional networks"
  (arXiv:1311.2901): the reconstruction passes a ReLU of its own, ignoring the forward pass:
  relu(g) for every ReLU-like op (so ReLU6's upper clip and a leaky slope do not act on it).
"""

from __future__ import annotations

from onnxplain.rules.table import modified
from onnxplain.rules.vjp import VJP


@modified("guided")
def guided(env):
    def rule(b, node, g):
        return VJP[node.op](b, node, [b.Relu(g[0])] + list(g[1:]))

    return rule


@modified("deconvnet")
def deconvnet(env):
    def rule(b, node, g):
        return [b.Relu(g[0])] + [None] * (len(node.inputs) - 1)

    return rule
