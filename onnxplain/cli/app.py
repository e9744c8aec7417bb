"""The ``onnxplain`` command line.

Every user error (an :class:`~onnxplain.errors.OnnxplainError`, bad usage, onnxruntime
refusing the input) ends in one line ``error: ...`` on stderr and exit code 2; an unexpected
internal failure ends in one line and exit code 1 (``ONNXPLAIN_DEBUG=1`` shows the traceback).
Results go to stdout, progress to stderr (only on a terminal).
"""

from __future__ import annotations

import contextlib
import os
import sys

import typer
from typer.core import TyperGroup

from onnxplain.errors import OnnxplainError, as_user_error, ort_text

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
    return ort_text(exc)


def _fail(message: str, code: int = USER_ERROR) -> int:
    typer.echo(f"error: {one_line(message)}", err=True)
    return code


def _is(exc: BaseException, name: str) -> bool:
    """Class-name test, so that click's exceptions match whether typer vendors click or not."""
    return any(c.__name__ == name for c in type(exc).__mro__)


class _Interrupted(Exception):
    """Ctrl-C inside a command, carried past click (which would print a blank line and say 'Aborted')."""


class _Group(TyperGroup):
    """Runs the app in non-standalone mode and turns every failure into one line.

    Commands run inside :func:`onnxplain.runtime.quiet.quiet`: the libraries' warnings and log lines
    are captured, so stderr holds at most the one ``error:`` line (``ONNXPLAIN_DEBUG=1`` shows them)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        argv = merge_numeric_args(list(sys.argv[1:] if args is None else args))
        debug = bool(os.environ.get("ONNXPLAIN_DEBUG"))
        try:
            with contextlib.nullcontext() if debug else _quiet():
                rv = super().main(
                    args=argv,
                    prog_name=prog_name or "onnxplain",
                    complete_var=complete_var,
                    standalone_mode=False,
                    **extra,
                )
            code = rv if isinstance(rv, int) else 0
        except OnnxplainError as exc:
            code = _fail(str(exc))
        except (KeyboardInterrupt, _Interrupted):
            code = _fail("interrupted", 130)  # the command's outputs were rolled back on the way here
            if standalone_mode:
                # leave now: a plain exit can be turned into death by SIGINT during interpreter shutdown
                # (seen as exit status -2 in about one run in five), which is not the promised 130
                for stream in (sys.stdout, sys.stderr):
                    with contextlib.suppress(Exception):
                        stream.flush()
                os._exit(code)
        except Exception as exc:
            code = self._failure(exc)
        if standalone_mode:
            sys.exit(code)
        return code

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise _Interrupted() from None

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
            return _fail("interrupted", 130)
        if os.environ.get("ONNXPLAIN_DEBUG"):
            raise exc
        user = as_user_error(exc)
        if user is not None:
            return _fail(str(user))
        return _fail(
            f"internal error ({type(exc).__name__}: {exc}); set ONNXPLAIN_DEBUG=1 for the traceback "
            "and please report it",
            INTERNAL_ERROR,
        )


def _quiet():
    from onnxplain.runtime.quiet import quiet

    return quiet()


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
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
):
    """Explain ONNX models: explanation graphs that run in any onnxruntime."""


@app.command()
def version():
    """Print the onnxplain version (and those of onnx and onnxruntime)."""
    import onnx

    from onnxplain import __version__
    from onnxplain.runtime.session import cuda_unusable_reason, installed_distributions, ort

    rt = ort()
    cuda = "CUDA usable" if not cuda_unusable_reason() else f"CPU only: {cuda_unusable_reason()}"
    typer.echo(
        f"onnxplain {__version__} (onnx {onnx.__version__}, onnxruntime {rt.__version__} from "
        f"{', '.join(installed_distributions()) or 'an unknown distribution'}; {cuda})"
    )
