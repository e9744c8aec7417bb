"""onnxruntime sessions: CUDA when it is really usable, a quiet CPU fall-back otherwise."""
from __future__ import annotations

import ctypes
import functools

import onnx
import onnxruntime as ort

ort.set_default_logger_severity(3)  # no warning spam (e.g. about missing CUDA libraries)


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


_default_threads = 0  # 0: onnxruntime's choice (one thread per core)


def set_default_threads(threads: int) -> None:
    """Intra-op threads of every session made afterwards in this process without ``threads=`` (0: onnxruntime's
    choice). A worker that shares its machine with others (a Ray actor per core) sets 1."""
    global _default_threads
    _default_threads = max(0, int(threads))


def make_session(model: onnx.ModelProto | str, providers: list[str] | None = None, threads: int | None = None
                 ) -> ort.InferenceSession:
    threads = _default_threads if threads is None else threads
    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # errors reach Python as exceptions; no duplicate log line
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # idle worker threads must not spin: an Explainer alternates between several sessions, and a
    # spinning pool steals the cores from the next one (measured: 1.8x slower forward passes)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    src = model if isinstance(model, str) else model.SerializeToString()
    # WeightBiasQuantization re-quantises the float weights of DequantizeLinear -> Conv -> QuantizeLinear with
    # scales of its own, so a dequantised QOperator model would no longer compute what the original did
    return ort.InferenceSession(src, sess_options=opts, providers=providers or default_providers(),
                                disabled_optimizers=["WeightBiasQuantization"])
