"""The table of true vector-Jacobian products, one short rule per ONNX op.

A rule is ``rule(b, node, g) -> [grad for each node input]``:

* ``b`` is the :class:`~onnxplain.graph.builder.Builder`, ``node`` the forward graphsurgeon node,
  ``g`` the list of cotangents of the node's outputs (``None`` where no cotangent reached one).
* It returns one entry per input, ``None`` for inputs it does not differentiate (weights, shapes).
* Rules registered with ``broadcast=True`` may return a cotangent in the output's (broadcast)
  shape; the walker sums it back to the input's shape. Accumulation, naming and pruning of
  unused results are the walker's job too, so a rule reads like its formula.

Like JAX's ``primitive_transposes``, this is a plain dict: ``VJP[op_type]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    fn: Callable
    broadcast: bool = False
    name: str = ""

    def __call__(self, b, node, g):
        return self.fn(b, node, g)


VJP: dict[str, Rule] = {}


def vjp(*ops: str, broadcast: bool = False):
    """Register ``fn`` as the VJP of each op in ``ops``."""

    def register(fn):
        for op in ops:
            if op in VJP:
                raise ValueError(f"VJP for {op} registered twice")
            VJP[op] = Rule(fn, broadcast, fn.__name__)
        return fn

    return register


def attr(node, key, default=None):
    return node.attrs.get(key, default)


def load_all() -> dict[str, Rule]:
    """Import every family module so that the table is complete."""
    from onnxplain.rules.vjp import (  # noqa: F401
        activation,
        einsum,
        elementwise,
        linear,
        normalization,
        pooling,
        quantize,
        recurrent,
        reduction,
        resize,
        shape,
    )

    return VJP
