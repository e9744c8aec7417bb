"""onnxruntime sessions on the device asked for: CUDA when it really starts, the CPU otherwise.

onnxruntime is imported defensively (:func:`ort`): two distributions sharing its module (``onnxruntime``
beside ``onnxruntime-gpu``), or a module left broken by uninstalling one of them, give one line that says
what to do, not a traceback. ``device="auto"`` uses CUDA only when a session really starts on it, and
says once, in one line, why it fell back.

Session settings (:func:`make_session`; measured on a 2-core x86_64 VM, bench/RESULTS.md):

* ``ORT_ENABLE_ALL``: the NCHWc layout transformer and Conv+activation fusion; ``ORT_ENABLE_EXTENDED`` (no NCHWc)
  measured +50% on both the forward pass and the gradient graph;
* ``session.intra_op.allow_spinning = 0``: an Explainer alternates between sessions (forward, explanation,
  guard), and a spinning pool of the previous session took the cores from the next (1.8x slower forward);
* intra-op threads: onnxruntime's default (one per physical core) unless ``threads`` is given; the parallel
  executor (inter-op) measured slower;
* the CPU memory arena and memory-pattern planning: onnxruntime's defaults (on); the explanation graph's
  shapes repeat from call to call, which is what the arena and the patterns reuse.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.metadata
import sys

import onnx

from onnxplain.errors import OnnxplainError

DEVICES = ("auto", "cpu", "cuda")
DISTRIBUTIONS = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-directml",
    "onnxruntime-openvino",
    "onnxruntime-silicon",
    "onnxruntime-qnn",
)
CUDA_NEEDS = (
    "the CUDA provider of onnxruntime-gpu needs an NVIDIA driver and the CUDA and cuDNN 9 user-space "
    "libraries its release was built for on the library path (pip: nvidia-cudnn-cu12 and friends, or "
    "`pip install onnxruntime-gpu[cuda,cudnn]`)"
)
_said: set = set()


def installed_distributions() -> list[str]:
    found = []
    for name in DISTRIBUTIONS:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found.append(f"{name} {importlib.metadata.version(name)}")
    return found


@functools.lru_cache(maxsize=1)
def ort():
    """The onnxruntime module, or one :class:`OnnxplainError` line saying how to repair the install."""
    found = installed_distributions()
    fix = (
        "pip uninstall -y "
        + " ".join(f.split()[0] for f in found)
        + " && pip install onnxruntime-gpu (or onnxruntime on a machine without CUDA)"
    )
    try:
        import onnxruntime as module

        module.InferenceSession, module.get_available_providers, module.set_default_logger_severity  # noqa: B018
    except (ImportError, AttributeError, OSError) as exc:
        shared = f" ({' and '.join(found)} share its files)" if len(found) > 1 else ""
        raise OnnxplainError(
            f"onnxruntime cannot be used in this environment{shared} ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:160]}); reinstall it: "
            + (
                fix
                if len(found) > 1
                else "pip install --force-reinstall onnxruntime-gpu (or onnxruntime on a machine without CUDA)"
            )
        ) from None
    if len(found) > 1:  # works now, but uninstalling either one breaks the other's files
        _note_once(f"{' and '.join(found)} are installed together and share one 'onnxruntime' module; keep one: {fix}")
    module.set_default_logger_severity(4)  # its own log lines would be a second line on stderr
    return module


@functools.lru_cache(maxsize=1)
def cuda_usable() -> bool:
    """True when the CUDA provider is built in *and* a CUDA driver can be loaded."""
    return not cuda_unusable_reason()


@functools.lru_cache(maxsize=1)
def cuda_unusable_reason() -> str:
    """Why CUDA cannot be used here ('' when it can, as far as can be told before a session starts)."""
    if "CUDAExecutionProvider" not in ort().get_available_providers():
        return "this onnxruntime has no CUDA provider (install onnxruntime-gpu on Linux or Windows x86_64)"
    try:
        ctypes.CDLL("libcuda.so.1" if sys.platform != "win32" else "nvcuda.dll")
    except OSError:
        return "no NVIDIA driver was found (libcuda could not be loaded)"
    return ""


def providers_for(device: str = "auto", providers: list[str] | None = None) -> list[str]:
    """The execution providers for ``device`` (``auto``, ``cpu``, ``cuda``), or ``providers`` as given."""
    if providers:
        missing = [p for p in providers if p not in ort().get_available_providers()]
        if missing:
            raise OnnxplainError(
                f"onnxruntime here has no {', '.join(missing)} (available: "
                f"{', '.join(ort().get_available_providers())})"
            )
        return list(providers)
    if device not in DEVICES:
        raise OnnxplainError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        reason = cuda_unusable_reason()
        if reason:
            raise OnnxplainError(f"--device cuda: {reason}; {CUDA_NEEDS}")
        return ["CUDAExecutionProvider"]
    return (["CUDAExecutionProvider"] if cuda_usable() else []) + ["CPUExecutionProvider"]


def default_providers() -> list[str]:
    return providers_for("auto")


def _note_once(message: str) -> None:
    if message not in _said:
        _said.add(message)
        print(f"onnxplain: {message}", file=sys.stderr)


_default_threads = 0  # 0: onnxruntime's choice (one thread per core)


def set_default_threads(threads: int) -> None:
    """Intra-op threads of every session made afterwards in this process without ``threads=`` (0: onnxruntime's
    choice). A worker that shares its machine with others (a Ray actor per core) sets 1."""
    global _default_threads
    _default_threads = max(0, int(threads))


def make_session(model: onnx.ModelProto | str, providers: list[str] | None = None, threads: int | None = None):
    """An onnxruntime session of ``model`` on ``providers`` (default: CUDA when usable, then the CPU)."""
    threads = _default_threads if threads is None else threads
    rt = ort()
    opts = rt.SessionOptions()
    opts.log_severity_level = 4  # errors reach Python as exceptions; no duplicate log line
    opts.graph_optimization_level = rt.GraphOptimizationLevel.ORT_ENABLE_ALL
    # idle worker threads must not spin: an Explainer alternates between several sessions, and a
    # spinning pool steals the cores from the next one (measured: 1.8x slower forward passes)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    src = model if isinstance(model, str) else model.SerializeToString()
    wanted = providers or default_providers()
    # WeightBiasQuantization re-quantises the float weights of DequantizeLinear -> Conv -> QuantizeLinear with
    # scales of its own, so a dequantised QOperator model would no longer compute what the original did
    sess = rt.InferenceSession(src, sess_options=opts, providers=wanted, disabled_optimizers=["WeightBiasQuantization"])
    if "CUDAExecutionProvider" in wanted and "CUDAExecutionProvider" not in sess.get_providers():
        if "CPUExecutionProvider" not in wanted:  # --device cuda: no silent fall-back
            raise OnnxplainError(f"--device cuda: the CUDA provider did not start; {CUDA_NEEDS}")
        _note_once(f"running on the CPU: the CUDA provider did not start ({CUDA_NEEDS})")
    return sess
