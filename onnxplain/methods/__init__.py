"""Method heads: each turns the backward pass into an ``attribution`` tensor inside the graph.

``HEADS[name](ctx) -> (attribution tensor, its shape)``.
"""
from .gradient import HEADS as _GRADIENT_HEADS

HEADS = dict(_GRADIENT_HEADS)
