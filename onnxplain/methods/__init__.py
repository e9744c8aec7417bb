"""Method heads: each turns the backward pass into an ``attribution`` tensor inside the graph.

``HEADS[name](ctx) -> (attribution tensor, its shape)``.
"""
from .gradient import HEADS as _GRADIENT_HEADS
from .modified import HEADS as _MODIFIED_HEADS

HEADS = {**_GRADIENT_HEADS, **_MODIFIED_HEADS}
from .lrp import HEADS as _LRP_HEADS  # noqa: E402

HEADS.update(_LRP_HEADS)
from .deeplift import HEADS as _DEEPLIFT_HEADS  # noqa: E402

HEADS.update(_DEEPLIFT_HEADS)
from .cam import HEADS as _CAM_HEADS  # noqa: E402

HEADS.update(_CAM_HEADS)
