"""onnxplain: explain any ONNX model, with explanation graphs that run in any onnxruntime."""

__version__ = "0.1.0"

import sys as _sys  # noqa: E402

from onnxplain.errors import OnnxplainError, UnsupportedOpsError  # noqa: E402
from onnxplain.evaluation import metrics  # noqa: E402
from onnxplain.evaluation.runner import Evaluation, Settings, evaluate  # noqa: E402
from onnxplain.graph.canonicalize import canonicalize  # noqa: E402
from onnxplain.graph.load import load_model, save_model_atomic  # noqa: E402
from onnxplain.graph.rewrite import Options, build  # noqa: E402
from onnxplain.runtime.explainer import Explainer, Explanation  # noqa: E402
from onnxplain.targets import Class, Detection, Layout, Region, Sequence, Target, Weights  # noqa: E402

_sys.modules.setdefault("onnxplain.metrics", metrics)  # `from onnxplain.metrics import ...` as before the layout

__all__ = [
    "Explainer",
    "Explanation",
    "Options",
    "build",
    "canonicalize",
    "load_model",
    "save_model_atomic",
    "evaluate",
    "Evaluation",
    "Settings",
    "OnnxplainError",
    "UnsupportedOpsError",
    "__version__",
    "metrics",
    "Class",
    "Detection",
    "Layout",
    "Region",
    "Sequence",
    "Target",
    "Weights",
]
