"""What the commands share: progress, one-line onnxruntime errors, file checks and common options."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from onnxplain.cli.app import is_ort_error, one_line, ort_message
from onnxplain.errors import OnnxplainError, as_user_error


@contextlib.contextmanager
def running(what: str):
    """Turn onnxruntime's exceptions into one-line user errors."""
    try:
        yield
    except OnnxplainError:
        raise
    except Exception as exc:
        if is_ort_error(exc):
            raise OnnxplainError(f"onnxruntime failed while {what}: {one_line(ort_message(exc), 400)}") from None
        user = as_user_error(exc)
        if user is not None:
            raise OnnxplainError(f"{what}: {user}") from None
        raise


class Progress:
    """A rich progress bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self, total: int | None, label: str, rate: bool = False):
        """``total=None``: set later, by a call with ``total=``; ``rate``: a column for a rate text
        (``self.bar.update(self.task, rate=...)``)."""
        from rich.console import Console

        self.console = Console(stderr=True)
        self.bar = None
        if self.console.is_terminal and (total is None or total > 0):
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            extra = [TextColumn("{task.fields[rate]}")] if rate else []
            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                *extra,
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self.task = self.bar.add_task(label, total=total, **({"rate": ""} if rate else {}))

    def __enter__(self):
        if self.bar:
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.bar:
            self.bar.stop()

    def __call__(self, advance: int = 0, description: str | None = None, total: int | None = None):
        if self.bar:
            self.bar.update(self.task, advance=advance, description=description, total=total)


@contextlib.contextmanager
def status(message: str):
    """A spinner on stderr while something slow happens (terminal only)."""
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        yield
        return
    with console.status(message):
        yield


def rules_file(path: Path | None) -> str | None:
    """Validate a --rules file up front, so a bad one fails before any model work."""
    if path is None:
        return None
    from onnxplain.rules.ruleset import load_ruleset

    load_ruleset(path)
    return str(path)


def expand_inputs(paths, recursive: bool = False) -> list[Path]:
    """Command-line inputs -> files: a folder gives its images and .npy arrays (subfolders too with
    ``recursive``), a glob pattern ('*.jpg', 'photos/**/*.png' with ``recursive``) the files it matches,
    sorted; anything else is taken as given (and checked later). A folder or pattern that yields nothing
    is one line."""
    import glob

    from onnxplain.io.preprocess import IMAGE_SUFFIXES

    wanted = IMAGE_SUFFIXES | {".npy"}
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(
                f
                for f in (p.rglob("*") if recursive else p.iterdir())
                if f.is_file() and f.suffix.lower() in wanted and not f.name.startswith(".")
            )
            if not found:
                raise OnnxplainError(
                    f"no images or .npy arrays in folder {p}"
                    + ("" if recursive else " (--recursive looks in its subfolders)")
                )
            out += found
        elif not p.exists() and glob.has_magic(str(p)):
            found = sorted(Path(f) for f in glob.glob(str(p), recursive=recursive) if Path(f).is_file())
            if not found:
                raise OnnxplainError(f"no file matches {p}")
            out += found
        else:
            out.append(p)
    return list(dict.fromkeys(out))


def existing(path: Path, what: str = "file") -> Path:
    if not path.exists():
        raise OnnxplainError(f"no such {what}: {path}")
    if not path.is_file():
        raise OnnxplainError(f"not a file: {path}")
    return path


def input_bytes(model: Path) -> int:
    """The bytes of a model file and of the external-data files it references (an output size estimate)."""
    from onnxplain.io.outputs import model_references

    total = 0
    for p in [Path(model), *model_references(Path(model))]:
        with contextlib.suppress(OSError):
            total += p.stat().st_size
    return total


def same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def human(nbytes: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1024 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} GB"


def fmt_io(vi) -> str:
    from onnxplain.graph.describe import _value_info, fmt_shape

    d = _value_info(vi)
    return f"{d['name']} {d['dtype']} {fmt_shape(d['shape'])}"


# ---- shared options ----------------------------------------------------------------------------------
def opt_input():
    return typer.Option(None, "--input", help="Input to explain (default: the first float input).")


def opt_output():
    return typer.Option(None, "--output", help="Output to explain (default: the first float output).")


def opt_prob():
    return typer.Option(False, "--probabilities", help="Explain the Softmax/Sigmoid output itself, not its logits.")


def opt_device():
    return typer.Option(
        "auto",
        "--device",
        help="auto (CUDA when a session really starts on it, else the CPU), "
        "cpu or cuda (an error when CUDA cannot start).",
    )


def opt_providers():
    return typer.Option(
        None,
        "--providers",
        help="onnxruntime execution providers, comma-separated, in order of "
        "preference (e.g. TensorrtExecutionProvider,CUDAExecutionProvider); overrides --device.",
    )


def session_options(device: str, providers: str | None) -> dict:
    """``--device``/``--providers`` -> the ``device=``/``providers=`` keywords of :class:`Explainer`, checked now
    (an unknown device or a provider this onnxruntime lacks is one line, before any work)."""
    from onnxplain.runtime.session import providers_for

    names = [p.strip() for p in (providers or "").split(",") if p.strip()] or None
    providers_for(device, names)
    return {"device": device, "providers": names}


def opt_class_axis():
    return typer.Option(
        None, "--class-axis", help="Class axis of the explained output (default: 1 for 4-D, else last)."
    )


def class_names(proto, labels: Path | None) -> list[str] | None:
    if labels is not None:
        existing(labels, "labels file")
        names = [ln.strip() for ln in labels.read_text(encoding="utf-8", errors="replace").splitlines()]
        return [n for n in names if n] or None
    meta = {p.key.lower(): p.value for p in proto.metadata_props}
    for key in ("class_names", "classes", "labels"):
        if key in meta:
            raw = meta[key]
            try:
                v = json.loads(raw)
                if isinstance(v, dict):
                    return [str(v[k]) for k in sorted(v, key=lambda k: int(k))]
                if isinstance(v, list):
                    return [str(x) for x in v]
            except (ValueError, TypeError):
                return [s.strip() for s in raw.split(",")]
    return None


def class_label(k: int, names) -> str:
    return f"{k} ({names[k]})" if names and 0 <= k < len(names) else str(k)


# ---- method options, generated from the method table ---------------------------------------------------
def _cli_type(opt):
    if opt.type is object or opt.check is not None or (opt.type in (int, float) and opt.choices):
        return str
    return opt.type


def method_option_help(name: str) -> str:
    """One help text for an option that several methods take: 'lime: ... (1000); kernelshap: ... (2048)'."""
    from onnxplain.methods.catalog import METHODS

    by_text: dict = {}
    for m in METHODS:
        o = next((o for o in m.options if o.name == name), None)
        if o is not None:
            text = o.help + ("" if o.default is None else f" ({o.default})")
            by_text.setdefault(text, []).append(m.name)
    return "; ".join(
        f"{', '.join(ms) if len(ms) < 6 else ', '.join(ms[:3]) + ', ...'}: {text}" for text, ms in by_text.items()
    )


def with_method_options(names=None):
    """Append one ``--option`` per method option of the table to a command (default None: not given).

    The command receives them in ``**method_options``; :func:`method_settings` turns them into
    each chosen method's keywords. ``names`` limits the options (``export``: graph-building ones)."""
    import inspect

    from onnxplain.methods.catalog import METHODS

    def decorate(command):
        sig = inspect.signature(command)
        params = [p for p in sig.parameters.values() if p.kind != p.VAR_KEYWORD]
        for name in METHODS.option_names():
            opt = next(o for m in METHODS for o in m.options if o.name == name)
            if not opt.cli or (names is not None and name not in names):
                continue
            params.append(
                inspect.Parameter(
                    name,
                    inspect.Parameter.KEYWORD_ONLY,
                    annotation=Optional[_cli_type(opt)],  # noqa: UP045 - a runtime type object for typer
                    default=typer.Option(None, opt.flag, help=method_option_help(name), show_default=False),
                )
            )
        command.__signature__ = sig.replace(parameters=params)
        return command

    return decorate


def parse_methods(values) -> list:
    """``-m a,b -m c`` -> the methods' table entries, in order, without repeats (aliases resolved)."""
    from onnxplain.methods.catalog import method

    names = [v.strip() for value in values for v in str(value).split(",") if v.strip()]
    return list({m.name: m for m in (method(n) for n in names)}.values())


def method_settings(methods, given: dict) -> dict:
    """Method name -> the keywords it takes from the given CLI options; an option no chosen method
    takes is an error (options are never silently ignored)."""
    from onnxplain.methods.catalog import METHODS

    given = {k: v for k, v in given.items() if v is not None}
    takers = METHODS.option_names()
    for name in given:
        if not any(m.option(name) for m in methods):
            flag = "--" + name.replace("_", "-")
            raise OnnxplainError(
                f"{flag} does not apply to {', '.join(m.name for m in methods)} "
                f"(it is an option of {', '.join(takers.get(name, ['no method']))})"
            )
    return {m.name: m.settings({k: v for k, v in given.items() if m.option(k)}, cli=True) for m in methods}


def opt_feed():
    return typer.Option(
        None,
        "--feed",
        help="A value for another model input (recurrent state, sample rate, "
        "mask): NAME=FILE.npy or NAME=NUMBER; repeat for several. They are constants of the "
        "explanation; the attribution is taken with respect to the explained input only.",
    )


def parse_fill(fill: str):
    """``--fill`` of the faithfulness metrics: mean, uniform, blur or a number."""
    if fill in ("mean", "uniform", "blur"):
        return fill
    try:
        return float(fill)
    except ValueError:
        raise OnnxplainError(f"--fill must be mean, uniform, blur or a number, not '{fill}'") from None


def parse_feeds(values) -> dict:
    """``--feed NAME=FILE.npy`` / ``--feed NAME=3.5`` -> {name: array}."""
    feeds = {}
    for v in values or []:
        name, sep, value = str(v).partition("=")
        if not sep or not name or not value:
            raise OnnxplainError(f"--feed takes NAME=FILE.npy or NAME=NUMBER, not '{v}'")
        if value.lower().endswith(".npy"):
            path = existing(Path(value), "feed file")
            try:
                feeds[name] = np.load(path, allow_pickle=False)
            except Exception as exc:
                raise OnnxplainError(f"cannot read {path} as a .npy array ({type(exc).__name__})") from None
        else:
            try:
                feeds[name] = np.array(int(value)) if value.lstrip("-").isdigit() else np.array(float(value))
            except ValueError:
                raise OnnxplainError(f"--feed {name}: '{value}' is neither a .npy file nor a number") from None
    return feeds


def parse_input_shapes(values) -> dict:
    """``--input-shape NAME=1,3,320,320`` -> {name: (1, 3, 320, 320)}."""
    shapes = {}
    for v in values or []:
        name, sep, dims = str(v).partition("=")
        try:
            shape = tuple(int(d) for d in dims.replace("x", ",").split(",") if d.strip())
        except ValueError:
            shape = ()
        if not sep or not name or not shape or any(d < 1 for d in shape):
            raise OnnxplainError(f"--input-shape takes NAME=D1,D2,... with positive sizes, not '{v}'")
        shapes[name] = shape
    return shapes
