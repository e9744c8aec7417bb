"""The ``onnxplain`` command line.

Every user error (an :class:`~onnxplain.errors.OnnxplainError`, bad usage, onnxruntime
refusing the input) ends in one line ``error: ...`` on stderr and exit code 2; an unexpected
internal failure ends in one line and exit code 1 (``ONNXPLAIN_DEBUG=1`` shows the traceback).
Results go to stdout, progress to stderr (only on a terminal).
"""
from __future__ import annotations

import os
import sys

import typer

from onnxplain.errors import OnnxplainError
from typer.core import TyperGroup

# ---- one-line errors ------------------------------------------------------------------------------
USER_ERROR = 2
INTERNAL_ERROR = 1
_NUMERIC_MULTI = {"--size": (2, int), "--mean": (4, float), "--std": (4, float)}


def one_line(text: str, limit: int = 600) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _is_number(text: str, kind) -> bool:
    try:
        kind(text)
        return True
    except ValueError:
        return False


def merge_numeric_args(args: list[str]) -> list[str]:
    """Let ``--size H W`` and ``--mean a b c`` take several values (click options take one).

    ``--size 160 224`` becomes ``--size "160 224"``; a following token is only taken when it is
    a number and not an existing file, so image paths are never swallowed.
    """
    out: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            out.extend(args[i:])
            break
        if a in _NUMERIC_MULTI and i + 1 < len(args):
            most, kind = _NUMERIC_MULTI[a]
            vals, j = [args[i + 1]], i + 2
            if _is_number(vals[0], kind):
                while len(vals) < most and j < len(args) and _is_number(args[j], kind) and not os.path.exists(args[j]):
                    vals.append(args[j])
                    j += 1
            out += [a, " ".join(vals)]
            i = j
            continue
        out.append(a)
        i += 1
    return out


def is_ort_error(exc: BaseException) -> bool:
    return type(exc).__module__.startswith("onnxruntime")


def ort_message(exc: BaseException) -> str:
    """onnxruntime's message without its ``[ONNXRuntimeError] : 2 : INVALID_ARGUMENT :`` prefix."""
    import re

    return re.sub(r"^\s*\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*[A-Z_]+\s*:\s*", "", one_line(exc, 2000))


def _fail(message: str, code: int = USER_ERROR) -> int:
    typer.echo(f"error: {one_line(message)}", err=True)
    return code


def _is(exc: BaseException, name: str) -> bool:
    """Class-name test, so that click's exceptions match whether typer vendors click or not."""
    return any(c.__name__ == name for c in type(exc).__mro__)


class _Group(TyperGroup):
    """Runs the app in non-standalone mode and turns every failure into one line."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        argv = merge_numeric_args(list(sys.argv[1:] if args is None else args))
        try:
            rv = super().main(args=argv, prog_name=prog_name or "onnxplain", complete_var=complete_var,
                              standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except OnnxplainError as exc:
            code = _fail(str(exc))
        except KeyboardInterrupt:
            code = _fail("interrupted", 130)
        except Exception as exc:
            code = self._failure(exc)
        if standalone_mode:
            sys.exit(code)
        return code


    @staticmethod
    def _failure(exc: Exception) -> int:
        if _is(exc, "NoArgsIsHelpError"):  # bare `onnxplain`: the help, not an error
            ctx = getattr(exc, "ctx", None)
            typer.echo(ctx.get_help() if ctx is not None else str(exc))
            return 0
        if _is(exc, "UsageError"):
            ctx = getattr(exc, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            return _fail(exc.format_message() + hint)
        if _is(exc, "ClickException"):
            return _fail(exc.format_message())
        if _is(exc, "Abort"):
            return _fail("aborted", 130)
        if os.environ.get("ONNXPLAIN_DEBUG"):
            raise exc
        if is_ort_error(exc):
            return _fail(f"onnxruntime: {ort_message(exc)}")
        if isinstance(exc, MemoryError):
            return _fail("out of memory (try a smaller --batch-size)")
        return _fail(f"internal error ({type(exc).__name__}: {exc}); set ONNXPLAIN_DEBUG=1 for the traceback "
                     "and please report it", INTERNAL_ERROR)


app = typer.Typer(
    cls=_Group,
    name="onnxplain",
    help="Explain ONNX models: explanation graphs that run in any onnxruntime.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)



# ---- commands ------------------------------------------------------------------------------------------
def _version_callback(value: bool):
    if value:
        from onnxplain import __version__

        typer.echo(f"onnxplain {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                       help="Print the version and exit.")):
    """Explain ONNX models: explanation graphs that run in any onnxruntime."""


@app.command()
def version():
    """Print the onnxplain version (and those of onnx and onnxruntime)."""
    import onnx

    from onnxplain import __version__
    from onnxplain.runtime.session import cuda_unusable_reason, installed_distributions, ort

    rt = ort()
    cuda = "CUDA usable" if not cuda_unusable_reason() else f"CPU only: {cuda_unusable_reason()}"
    typer.echo(f"onnxplain {__version__} (onnx {onnx.__version__}, onnxruntime {rt.__version__} from "
               f"{', '.join(installed_distributions()) or 'an unknown distribution'}; {cuda})")


