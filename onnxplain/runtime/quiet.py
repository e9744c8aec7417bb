"""A quiet runtime: the libraries' own messages never reach the user as extra lines.

onnxruntime logs from C++ to file descriptor 2 (constant folding of a bad model logs an error
before raising), onnx and Pillow emit Python warnings, onnx-graphsurgeon prints ``[W]`` lines and
onnxruntime's symbolic shape inference writes ``sym_shape_infer_temp.onnx`` (and its data file)
into the current folder when it gives up. :func:`quiet` (the command line wraps every command in
it) captures all of that; the command then prints its results and at most one error line.
:func:`scratch_cwd` runs a call in a temporary folder that is removed afterwards.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import tempfile
import warnings


@contextlib.contextmanager
def scratch_cwd():
    """Run the body in a new temporary current folder, removed afterwards with whatever it holds."""
    old = os.getcwd()
    tmp = tempfile.mkdtemp(prefix="onnxplain-scratch-")
    try:
        os.chdir(tmp)
        yield tmp
    finally:
        os.chdir(old)
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def captured_fd2():
    """Point file descriptor 2 at a temporary file (native libraries' logs), while Python's
    ``sys.stderr`` keeps writing to the real stderr. Yields a function returning what was captured."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield lambda: ""
        return
    sink = tempfile.TemporaryFile()  # noqa: SIM115 - stays open while stderr points at it, closed below
    old_stderr = sys.stderr
    try:
        python_on_fd2 = sys.stderr.fileno() == 2
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        python_on_fd2 = False  # a test runner's buffer: leave it
    try:
        os.dup2(sink.fileno(), 2)
        if python_on_fd2:
            sys.stderr = io.TextIOWrapper(
                os.fdopen(os.dup(saved), "wb", buffering=0), encoding="utf-8", errors="replace", line_buffering=True
            )

        def text() -> str:
            sink.seek(0)
            return sink.read().decode("utf-8", "replace")

        yield text
    finally:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        if sys.stderr is not old_stderr:
            with contextlib.suppress(Exception):
                sys.stderr.close()
        sys.stderr = old_stderr
        os.dup2(saved, 2)
        os.close(saved)
        sink.close()


@contextlib.contextmanager
def quiet():
    """No warnings, no graphsurgeon lines, no onnxruntime log lines, no native stderr output."""
    import onnx_graphsurgeon as gs

    from onnxplain.runtime.session import ort

    logger = gs.logger.G_LOGGER
    level = logger.severity
    logger.severity = logger.CRITICAL
    ort()  # imported defensively (a broken install is one line); its own log is silenced there
    try:
        with warnings.catch_warnings(), captured_fd2():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.severity = level
