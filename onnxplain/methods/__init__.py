"""Method heads: each turns the backward pass into an ``attribution`` tensor inside the graph.

``HEADS[name](ctx) -> (attribution tensor, its shape)``.
"""
from onnxplain.methods.gradient import HEADS as _GRADIENT_HEADS
from onnxplain.methods.modified import HEADS as _MODIFIED_HEADS

HEADS = {**_GRADIENT_HEADS, **_MODIFIED_HEADS}
from onnxplain.methods.lrp import HEADS as _LRP_HEADS  # noqa: E402

HEADS.update(_LRP_HEADS)
from onnxplain.methods.deeplift import HEADS as _DEEPLIFT_HEADS  # noqa: E402

HEADS.update(_DEEPLIFT_HEADS)
from onnxplain.methods.cam import HEADS as _CAM_HEADS  # noqa: E402

HEADS.update(_CAM_HEADS)
