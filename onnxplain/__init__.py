"""onnxplain: explain any ONNX model, with explanation graphs that run in any onnxruntime."""
__version__ = "0.1.0"

from .errors import OnnxplainError, UnsupportedOpsError  # noqa: E402
from .load import load_model, save_model_atomic  # noqa: E402
from .canonicalize import canonicalize  # noqa: E402
from .explanation import Options, build  # noqa: E402
from .explainer import Explainer, Explanation  # noqa: E402
from .evaluation import Evaluation, Settings, evaluate  # noqa: E402

__all__ = ["Explainer", "Explanation", "Options", "build", "canonicalize", "load_model", "save_model_atomic",
           "evaluate", "Evaluation", "Settings", "OnnxplainError", "UnsupportedOpsError", "__version__"]
