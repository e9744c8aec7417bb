"""User-facing errors. The CLI turns every ``OnnxplainError`` into one line and exit code 2.

:func:`as_user_error` is the one place that decides which other exceptions a user can cause (and so
become an ``OnnxplainError``); everything else is a bug (exit code 1 on the command line).
"""

import contextlib
import os
import re


class OnnxplainError(Exception):
    """A problem with the user's input (model, data, options), reported as one line."""


class UnsupportedOpsError(OnnxplainError):
    """Nodes on the explained path that the active rule set has no rule for.

    Raised once, listing every such node, before anything is written.
    """

    def __init__(self, nodes, ruleset: str):
        self.nodes = list(nodes)  # [(op_type, node_name)]
        self.ruleset = ruleset
        listed = ", ".join(f"{op} '{name}'" for op, name in self.nodes)
        super().__init__(
            f"rule set '{ruleset}' has no rule for {len(self.nodes)} node(s) on the explained path: {listed}"
        )


class ShapeError(OnnxplainError):
    """A rule needs a size or rank that is only known at run time.

    The Python API and ``onnxplain explain`` know the input's shape and specialise the graph to it
    (:mod:`onnxplain.graph.specialise`) when they meet this; ``onnxplain export`` asks for
    ``--input-shape``.
    """


# ---- every error a user can cause, as one line ---------------------------------------------------------
_OS_WORDS = {
    "ENOSPC": "no space left on the device",
    "EDQUOT": "disk quota exceeded",
    "EFBIG": "file too large for this file system",
    "EROFS": "read-only file system",
    "EACCES": "permission denied",
    "EPERM": "operation not permitted",
    "ENAMETOOLONG": "file name too long",
    "EISDIR": "is a directory",
    "ENOTDIR": "a part of the path is not a folder",
    "ENOENT": "no such file or folder",
    "EEXIST": "already exists",
    "EMFILE": "too many open files",
    "ENFILE": "too many open files",
    "ELOOP": "too many symbolic links",
    "EIO": "input/output error",
    "EXDEV": "cannot rename across file systems",
}


def os_message(exc: BaseException) -> str:
    """An OSError in a few words: what went wrong (by errno) and the file."""
    import errno

    name = errno.errorcode.get(getattr(exc, "errno", None) or -1, "")
    words = _OS_WORDS.get(name) or (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)
    files = [f for f in (getattr(exc, "filename", None), getattr(exc, "filename2", None)) if f]
    return f"{words} ({', '.join(map(str, files))})" if files else words


def _from_onnxruntime(exc: BaseException) -> bool:
    """Raised by onnxruntime: its own exception types, or a plain ValueError/RuntimeError raised in
    its Python package (``Required inputs ... are missing``)."""
    if type(exc).__module__.startswith("onnxruntime"):
        return True
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    return (
        bool(last) and f"{os.sep}onnxruntime{os.sep}" in last and isinstance(exc, (ValueError, RuntimeError, TypeError))
    )


def ort_text(exc: BaseException) -> str:
    """onnxruntime's message, one line, without its ``[ONNXRuntimeError] : 2 : INVALID_ARGUMENT :`` prefix."""
    line = " ".join(str(exc).split())
    line = re.sub(r"^\s*\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*[A-Z_]+\s*:\s*", "", line)
    return line if len(line) <= 400 else line[:397] + "..."


def as_user_error(exc: BaseException) -> "OnnxplainError | None":
    """The :class:`OnnxplainError` a user-caused exception stands for; None for a real bug.

    Users cause: file-system errors (full disk, permissions, read-only folders, long names), onnxruntime
    refusing a model or an input, memory exhaustion, TOML and recursion errors from a hostile rule file,
    NUL characters in paths."""
    if isinstance(exc, OnnxplainError):
        return exc
    if isinstance(exc, MemoryError):
        return OnnxplainError(
            "out of memory: the model or the inputs need more memory than this machine has "
            "(try a smaller --batch-size or --size, or set --max-memory)"
        )
    if isinstance(exc, OSError) and getattr(exc, "errno", None):
        return OnnxplainError(os_message(exc))
    if _from_onnxruntime(exc):
        return OnnxplainError(f"onnxruntime: {ort_text(exc)}")
    if isinstance(exc, ValueError) and "null byte" in str(exc):
        return OnnxplainError("a path contains a NUL character")
    if isinstance(exc, RecursionError):
        return OnnxplainError("the input is nested too deeply to read")
    if type(exc).__name__ == "TOMLDecodeError":
        return OnnxplainError(f"not valid TOML ({' '.join(str(exc).split())})")
    return None


@contextlib.contextmanager
def user_errors(what: str | None = None):
    """Re-raise user-caused exceptions (see :func:`as_user_error`) as one-line :class:`OnnxplainError`."""
    try:
        yield
    except OnnxplainError:
        raise
    except Exception as exc:  # noqa: BLE001 -- only the user-caused ones are converted
        err = as_user_error(exc)
        if err is None:
            raise
        if what:
            err = OnnxplainError(f"{what}: {err}")
        raise err from None
