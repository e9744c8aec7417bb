"""onnxruntime sessions: CUDA when it is really usable, a quiet CPU fall-back otherwise."""
from __future__ import annotations

import ctypes
import functools

import onnx
import onnxruntime as ort

ort.set_default_logger_severity(4)  # no log lines (missing CUDA libraries, constant folding): errors are raised


@functools.lru_cache(maxsize=1)
def cuda_usable() -> bool:
    """True when the CUDA provider is built in *and* a CUDA driver can be loaded."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def default_providers() -> list[str]:
    return (["CUDAExecutionProvider"] if cuda_usable() else []) + ["CPUExecutionProvider"]


def make_session(model: onnx.ModelProto | str, providers: list[str] | None = None, threads: int = 0) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # errors reach Python as exceptions; no duplicate log line
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # idle worker threads must not spin: an Explainer alternates between several sessions, and a
    # spinning pool steals the cores from the next one (measured: 1.8x slower forward passes)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        opts.intra_op_num_threads = threads
    src = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(src, sess_options=opts, providers=providers or default_providers())
