"""Sessions fall back to the CPU quietly where CUDA is absent."""

import subprocess
import sys

from onnxplain.runtime.session import cuda_usable, default_providers

SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import numpy as np
from models import tiny_cnn
from onnxplain import Explainer
a = Explainer(tiny_cnn()).explain(np.ones((1, 3, 8, 8), np.float32))
print(a.shape)
"""


def test_providers_end_with_cpu():
    providers = default_providers()
    assert providers[-1] == "CPUExecutionProvider"
    assert ("CUDAExecutionProvider" in providers) == cuda_usable()


def test_no_error_spam():
    import pathlib

    out = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(tests=str(pathlib.Path(__file__).parent))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(1, 3, 8, 8)"
    assert out.stderr == "", out.stderr


def test_no_torch_at_run_time():
    """Explaining a model that needs symbolic shape inference (segnet, opset 11) never imports torch."""
    import pathlib

    zoo = pathlib.Path(__file__).parent / "zoo" / "segnet_ts11.onnx"
    code = (
        "import sys, numpy as np\nfrom onnxplain import Explainer\n"
        f"a = Explainer({str(zoo)!r}).explain(np.zeros((1, 3, 32, 32), np.float32), target=1)\n"
        "print('torch' in sys.modules, a.shape)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False (1, 3, 32, 32)"
