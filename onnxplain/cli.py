"""The ``onnxplain`` command line.

Every user error (an :class:`~onnxplain.errors.OnnxplainError`, bad usage, onnxruntime
refusing the input) ends in one line ``error: ...`` on stderr and exit code 2; an unexpected
internal failure ends in one line and exit code 1 (``ONNXPLAIN_DEBUG=1`` shows the traceback).
Results go to stdout, progress to stderr (only on a terminal).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np
import typer
from typer.core import TyperGroup

from onnxplain.errors import OnnxplainError

# ---- one-line errors ------------------------------------------------------------------------------
USER_ERROR = 2
INTERNAL_ERROR = 1
_NUMERIC_MULTI = {"--size": (2, int), "--mean": (4, float), "--std": (4, float)}


def _one_line(text: str, limit: int = 600) -> str:
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


def _is_ort_error(exc: BaseException) -> bool:
    return type(exc).__module__.startswith("onnxruntime")


def _ort_message(exc: BaseException) -> str:
    """onnxruntime's message without its ``[ONNXRuntimeError] : 2 : INVALID_ARGUMENT :`` prefix."""
    import re

    return re.sub(r"^\s*\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*[A-Z_]+\s*:\s*", "", _one_line(exc, 2000))


def _fail(message: str, code: int = USER_ERROR) -> int:
    typer.echo(f"error: {_one_line(message)}", err=True)
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
        if _is_ort_error(exc):
            return _fail(f"onnxruntime: {_ort_message(exc)}")
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


@contextlib.contextmanager
def _running(what: str):
    """Turn onnxruntime's exceptions into one-line user errors."""
    try:
        yield
    except OnnxplainError:
        raise
    except Exception as exc:
        if _is_ort_error(exc):
            raise OnnxplainError(f"onnxruntime failed while {what}: {_one_line(_ort_message(exc), 400)}") from None
        raise


class _Progress:
    """A rich progress bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self, total: int | None, label: str):
        """``total=None``: set later, by a call with ``total=``."""
        from rich.console import Console

        self.console = Console(stderr=True)
        self.bar = None
        if self.console.is_terminal and (total is None or total > 0):
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), console=self.console, transient=True)
            self.task = self.bar.add_task(label, total=total)

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
def _status(message: str):
    """A spinner on stderr while something slow happens (terminal only)."""
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        yield
        return
    with console.status(message):
        yield


def _opt_rules():
    return typer.Option(None, "--rules", help="A rule-set file (TOML) replacing the method's rules/<method>.toml.")


def _rules_file(path: Optional[Path]) -> Optional[str]:
    """Validate a --rules file up front, so a bad one fails before any model work."""
    if path is None:
        return None
    from onnxplain.rules.ruleset import load_ruleset

    load_ruleset(path)
    return str(path)


def _superpixel_params(segmentation: str, n_segments: Optional[int], fill: str) -> dict:
    """Explainer.run keywords of lime/kernelshap from the CLI options."""
    params = {"segmentation": segmentation}
    if n_segments is not None:
        if segmentation != "slic":
            raise OnnxplainError("--n-segments applies to --segmentation slic")
        params["n_segments"] = n_segments
    if fill != "mean":
        try:
            params["fill"] = float(fill)
        except ValueError:
            raise OnnxplainError(f"--fill must be 'mean' or a number, not '{fill}'") from None
    return params


def _blackbox_params(window: int, stride: Optional[int], fill: str, blur: Optional[float], n_masks: int,
                     cells: int, iterations: int = 300, area: float = 0.1) -> dict:
    """Explainer.run keywords of occlusion and rise from the CLI options."""
    occ = {"window": window, "stride": stride, "blur": blur}
    if fill != "mean":
        try:
            occ["fill"] = float(fill)
        except ValueError:
            raise OnnxplainError(f"--fill must be 'mean' or a number, not '{fill}'") from None
    else:
        occ["fill"] = "mean"
    pert = {"iterations": iterations} if blur is None else {"iterations": iterations, "blur": blur}
    return {"occlusion": occ, "rise": {"n_masks": n_masks, "cells": cells}, "meaningful_perturbation": pert,
            "extremal_perturbation": {**pert, "area": area}}


def _check_method(method: str) -> str:
    from onnxplain.runtime.explainer import all_methods

    if method not in all_methods():
        raise OnnxplainError(f"unknown method '{method}' (choose from: {', '.join(sorted(all_methods()))})")
    return method


def _existing(path: Path, what: str = "file") -> Path:
    if not path.exists():
        raise OnnxplainError(f"no such {what}: {path}")
    if not path.is_file():
        raise OnnxplainError(f"not a file: {path}")
    return path


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _human(nbytes: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1024 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} GB"


def _fmt_io(vi) -> str:
    from onnxplain.graph.describe import _value_info, fmt_shape

    d = _value_info(vi)
    return f"{d['name']} {d['dtype']} {fmt_shape(d['shape'])}"


# ---- shared options ----------------------------------------------------------------------------------
def _opt_input():
    return typer.Option(None, "--input", help="Input to explain (default: the first float input).")


def _opt_output():
    return typer.Option(None, "--output", help="Output to explain (default: the first float output).")


def _opt_prob():
    return typer.Option(False, "--probabilities", help="Explain the Softmax/Sigmoid output itself, not its logits.")


def _opt_class_axis():
    return typer.Option(None, "--class-axis", help="Class axis of the explained output (default: 1 for 4-D, else last).")


def _opt_layer():
    return typer.Option(None, "--layer", help="CAM methods: the layer to tap, a tensor or node name (default: the "
                        "automatic choice that `onnxplain inspect` marks).")


def _opt_prefix_tokens():
    return typer.Option(None, "--prefix-tokens", min=0, help="CAM methods on token maps [N, T, D]: tokens before the "
                        "patch grid (class/register tokens; default: from the shapes).")


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
    import onnxruntime

    from onnxplain import __version__

    typer.echo(f"onnxplain {__version__} (onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__})")


@app.command()
def export(
    model: Path = typer.Argument(..., help="The ONNX model to explain.", show_default=False),
    method: str = typer.Option("gradient", "--method", "-m", help="Attribution method."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the explanation graph (.onnx).",
                             show_default=False),
    input: Optional[str] = _opt_input(),
    output: Optional[str] = _opt_output(),
    probabilities: bool = _opt_prob(),
    target_mode: str = typer.Option("class", "--target-mode",
                                    help="class: an int64 'target' input; weights: a 'target_weights' seed tensor."),
    class_axis: Optional[int] = _opt_class_axis(),
    layer: Optional[str] = _opt_layer(),
    prefix_tokens: Optional[int] = _opt_prefix_tokens(),
    steps: int = typer.Option(32, "--steps", min=1, help="integrated_gradients: path points."),
    samples: int = typer.Option(16, "--samples", min=1, help="smoothgrad: noisy copies."),
    noise: float = typer.Option(0.15, "--noise", min=0.0, help="smoothgrad: sigma / (max(x) - min(x))."),
    seed: int = typer.Option(0, "--seed", help="smoothgrad: seed of the in-graph noise."),
    rules: Optional[Path] = _opt_rules(),
):
    """Write the explanation graph of MODEL: the model plus a backward pass and an `attribution` output."""
    import onnx

    from onnxplain.graph.rewrite import Options, build
    from onnxplain.graph.load import load_model

    t0 = time.perf_counter()
    _check_method(method)
    from onnxplain.runtime.explainer import BLACKBOX, FORWARD_CAMS, PERTURBATION, SUPERPIXEL

    if method in FORWARD_CAMS or method in SUPERPIXEL or method in BLACKBOX + PERTURBATION:
        raise OnnxplainError(f"{method} runs many forward passes from Python and has no single explanation graph; "
                             "use `onnxplain explain` (or Explainer) for it")
    if target_mode not in ("class", "weights"):
        raise OnnxplainError(f"--target-mode must be 'class' or 'weights', not '{target_mode}'")
    _existing(model)
    if out.exists() and out.is_dir():
        raise OnnxplainError(f"output {out} is a directory; give a file name such as {out / 'explained.onnx'}")
    if _same_file(model, out):
        raise OnnxplainError(f"refusing to overwrite the input model {model}; choose another -o/--out")
    if out.suffix.lower() != ".onnx":
        raise OnnxplainError(f"output {out} should end in .onnx")

    src = load_model(model)
    before = len(src.graph.node)
    options = Options(input=input, output=output, probabilities=probabilities, target_mode=target_mode,
                      class_axis=class_axis, steps=steps, samples=samples, noise=noise, seed=seed,
                      rules=_rules_file(rules), layer=layer, prefix_tokens=prefix_tokens)
    with _status(f"building the {method} graph"):
        graph = build(src, method, options)
    _check_and_save(graph, out, onnx)
    elapsed = time.perf_counter() - t0

    meta = {p.key: p.value for p in graph.metadata_props}
    params = {"integrated_gradients": f", steps {steps}", "smoothgrad": f", samples {samples}, noise {noise}",
              "smoothgrad_sq": f", samples {samples}, noise {noise}"}.get(method, "")
    typer.echo(f"wrote {out} ({_human(out.stat().st_size)}) in {elapsed:.2f} s")
    typer.echo(f"  method   {method} (target mode {target_mode}{params})")
    explained = meta.get("onnxplain.explained", "?")
    inner = "" if explained in {o.name for o in src.graph.output} | {output} else " (the logits under the Softmax/Sigmoid)"
    typer.echo(f"  explains input '{meta.get('onnxplain.input', '?')}' -> '{explained}'{inner}")
    if "onnxplain.layer" in meta:
        grid = meta.get("onnxplain.layer_grid")
        typer.echo(f"  layer    '{meta['onnxplain.layer']}'" + (f" (tokens: {grid})" if grid else ""))
    typer.echo(f"  nodes    {before} -> {len(graph.graph.node)}")
    inits = {t.name for t in graph.graph.initializer}
    ins = [vi for vi in graph.graph.input if vi.name not in inits or vi.name in ("target", "baseline")]
    typer.echo("  inputs   " + "; ".join(_fmt_io(vi) for vi in ins))
    typer.echo("  outputs  " + "; ".join(_fmt_io(vi) for vi in graph.graph.output))
    typer.echo("  check    onnx.checker full_check passed")


def _check_and_save(graph, out: Path, onnx, in_memory_limit: int = 2**31 - 2**26) -> None:
    """Full ONNX check, then an atomic write; nothing is written when the check fails.

    Graphs over ``in_memory_limit`` bytes (protobuf cannot serialise 2 GB) are written to a
    temporary folder beside ``out`` (weights as external data), checked by path, then moved in.
    """
    from onnxplain.graph.load import save_model_atomic

    def failed(exc):
        return OnnxplainError(f"the explanation graph fails onnx.checker.check_model(full_check=True): "
                              f"{_one_line(exc, 300)}; nothing was written (please report this)")

    try:
        small = graph.ByteSize() < in_memory_limit
    except Exception:
        small = False
    if small:
        try:
            onnx.checker.check_model(graph, full_check=True)
        except Exception as exc:
            raise failed(exc) from None
        save_model_atomic(graph, out)
        return
    # over protobuf's 2 GB limit: check the written files (model + external data) before moving them in
    made = not out.parent.exists()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=".onnxplain-export-", dir=out.parent))
    ok = False
    try:
        tmp = save_model_atomic(graph, tmpdir / out.name)
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except Exception as exc:
            raise failed(exc) from None
        data = tmpdir / (out.name + ".data")
        if data.exists():
            os.replace(data, out.parent / data.name)
        os.replace(tmp, out)
        ok = True
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
        if made and not ok:
            with contextlib.suppress(OSError):
                out.parent.rmdir()


def _class_names(proto, labels: Path | None) -> list[str] | None:
    if labels is not None:
        _existing(labels, "labels file")
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


def _name(k: int, names) -> str:
    return f"{k} ({names[k]})" if names and 0 <= k < len(names) else str(k)


@app.command()
def explain(
    model: Path = typer.Argument(..., help="The ONNX model.", show_default=False),
    images: list[Path] = typer.Argument(..., help="Images (PNG, JPEG, ...) or preprocessed .npy arrays.",
                                        show_default=False),
    method: list[str] = typer.Option(["gradient"], "--method", "-m",
                                     help="Attribution method; repeat for several (then a comparison grid is written)."),
    target: Optional[int] = typer.Option(None, "--target", "-t", help="Class to explain (default: the predicted one)."),
    out_dir: Path = typer.Option(Path("out"), "--out-dir", "-d", help="Folder for the PNG and NPY files."),
    input: Optional[str] = _opt_input(),
    output: Optional[str] = _opt_output(),
    probabilities: bool = _opt_prob(),
    class_axis: Optional[int] = _opt_class_axis(),
    layer: Optional[str] = _opt_layer(),
    prefix_tokens: Optional[int] = _opt_prefix_tokens(),
    preset: str = typer.Option("raw01", "--preset", help="raw01 (p/255), imagenet, caffe (BGR, mean in 0-255), tf ([-1, 1])."),
    size: Optional[str] = typer.Option(None, "--size", help="Resize to H W (or one int for both); default: the model's."),
    mean: Optional[str] = typer.Option(None, "--mean", help="Per-channel mean, subtracted after --scale (tensor channel order)."),
    std: Optional[str] = typer.Option(None, "--std", help="Per-channel std, divided after the mean."),
    layout: Optional[str] = typer.Option(None, "--layout", help="NCHW or NHWC (default: from the model input)."),
    bgr: Optional[bool] = typer.Option(None, "--bgr/--rgb", help="Channel order of the tensor (default: the preset's)."),
    scale: Optional[str] = typer.Option(None, "--scale", help="Pixel multiplier, e.g. 1/255 (default: the preset's)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Text file with one class name per line."),
    steps: int = typer.Option(32, "--steps", min=1, help="integrated_gradients: path points."),
    samples: Optional[int] = typer.Option(None, "--samples", min=1,
                                          help="smoothgrad: noisy copies (16); lime: perturbed samples (1000); "
                                               "kernelshap: coalitions (2048)."),
    noise: float = typer.Option(0.15, "--noise", min=0.0, help="smoothgrad: sigma / (max(x) - min(x))."),
    seed: int = typer.Option(0, "--seed", help="smoothgrad: noise seed; lime, kernelshap: sampling seed."),
    segmentation: str = typer.Option("slic", "--segmentation",
                                     help="lime, kernelshap: superpixels by slic, quickshift or felzenszwalb."),
    n_segments: Optional[int] = typer.Option(None, "--n-segments", min=1,
                                             help="lime, kernelshap with slic: about how many superpixels (50)."),
    fill: str = typer.Option("mean", "--fill", help="lime, kernelshap: hidden superpixels get their mean colour "
                             "('mean') or this value (tensor space); occlusion: patches likewise (item mean)."),
    window: int = typer.Option(8, "--window", min=1, help="occlusion: patch size in pixels."),
    stride: Optional[int] = typer.Option(None, "--stride", min=1, help="occlusion: patch step (default: --window)."),
    blur: Optional[float] = typer.Option(None, "--blur", min=0.0, help="occlusion: patches show the image blurred "
                                         "with this Gaussian sigma instead of --fill."),
    n_masks: int = typer.Option(2000, "--n-masks", min=1, help="rise: random masks."),
    cells: int = typer.Option(7, "--cells", min=1, help="rise: mask grid cells per side."),
    iterations: int = typer.Option(300, "--iterations", min=0, help="meaningful/extremal_perturbation: Adam steps "
                                   "(--blur: their blur sigma, default 10)."),
    area: float = typer.Option(0.1, "--area", min=0.0, max=1.0, help="extremal_perturbation: fraction kept."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Items per onnxruntime call."),
    alpha: float = typer.Option(0.75, "--alpha", min=0.0, max=1.0, help="Heatmap opacity at full strength."),
    shared_scale: bool = typer.Option(False, "--shared-scale", help="One colour scale per grid row (all methods)."),
    rules: Optional[Path] = _opt_rules(),
    baseline: Optional[float] = typer.Option(None, "--baseline",
                                             help="integrated_gradients, deeplift: baseline value in tensor space "
                                                  "(default 0)."),
    unit: Optional[str] = typer.Option(None, "--unit", help="Explain one channel/unit of an inner tensor instead "
                                       "of a class: LAYER:CHANNEL[:Y:X] (gradient, deconvnet, guided_backprop)."),
):
    """Explain images with one or more methods; writes <stem>.<method>.png (overlay) and .npy (raw)."""
    from onnxplain.io import preprocess, render
    from onnxplain.graph.builder import np_dtype
    from onnxplain.runtime.explainer import Explainer
    from onnxplain.graph.rewrite import class_axis_of
    from onnxplain.graph.describe import _dims, fmt_shape

    methods = list(dict.fromkeys(_check_method(m) for m in (method or ["gradient"])))
    for p in images:
        if p.suffix.lower() == ".npy":
            _existing(p)
        else:
            _existing(p, "image file")
    _existing(model)
    recipe = preprocess.resolve(preset, scale=scale, mean=mean, std=std, bgr=bgr, layout=layout, size=size)

    ex = Explainer(str(model), input=input, output=output, probabilities=probabilities, class_axis=class_axis,
                   rules=_rules_file(rules))
    if layer is not None or prefix_tokens is not None:
        ex.options = replace(ex.options, layer=layer, prefix_tokens=prefix_tokens)
    shape = ex.x.shape
    has_images = any(p.suffix.lower() != ".npy" for p in images)
    try:
        recipe = preprocess.for_model(recipe, shape)
    except OnnxplainError:
        if has_images:
            raise
        recipe = None  # .npy only, not an image input: attributions are written, no overlays
    if recipe is not None and recipe.layout == "NHWC":
        ex.options = replace(ex.options, channel_axis=3)
    items = preprocess.load_items(images, recipe, shape, dtype=np_dtype(ex.x) or np.float32)
    for it in items:  # validate everything before the first run: nothing half-written on bad input
        ex.check_input(it.tensor[None])
    if target is not None:
        ex.check_target(target, 1)
    from onnxplain.runtime.explainer import BLACKBOX, FORWARD_CAMS, LOOPED, PERTURBATION, SUPERPIXEL

    superpixel = _superpixel_params(segmentation, n_segments, fill)
    blackbox = _blackbox_params(window, stride, fill, blur, n_masks, cells, iterations, area)
    if unit is not None:
        from onnxplain.methods.featurevis import check_cli_unit

        unit = check_cli_unit(ex, methods, unit, target)
    with _status("building explanation graphs"):
        for m in methods:  # unsupported ops etc. surface here, before anything is written
            if unit is None and m not in FORWARD_CAMS and m not in SUPERPIXEL and m not in BLACKBOX + PERTURBATION:
                ex.graph("gradient" if m in LOOPED else m, "class")

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OnnxplainError(f"--out-dir {out_dir} exists and is not a folder")
    inputs = [model, *images] + ([labels] if labels else [])
    planned = [out_dir / f"{it.name}.{m}.{ext}" for it in items for m in methods for ext in ("png", "npy")]
    for path in planned:
        for src in inputs:
            if _same_file(path, src):
                raise OnnxplainError(f"refusing to overwrite the input file {src}; choose another --out-dir")

    names = _class_names(ex.canonical.model, labels)
    out_t = ex.canonical.output(ex.options.output)
    cax = class_axis_of(out_t, ex.options) if out_t.shape is not None else 1
    item_channel_axis = -1 if recipe is not None and recipe.layout == "NHWC" else 0

    results = {m: [None] * len(items) for m in methods}
    summary = [None] * len(items)
    groups, start = [], 0
    while start < len(items):  # consecutive runs of same-shaped items, at most batch_size long
        end = start + 1
        while end < len(items) and end - start < batch_size and items[end].tensor.shape == items[start].tensor.shape:
            end += 1
        groups.append((start, end))
        start = end
    written = []
    with _Progress(len(methods) * len(items), "explaining") as bar:
        for m in methods:
            for s, e in groups:
                bar(description=f"{m}")
                x = np.stack([it.tensor for it in items[s:e]])
                with _running(f"running {m}"):
                    res = ex.run(x, m, target=target, steps=steps, samples=samples, noise=noise, seed=seed,
                                 batch_size=batch_size, baseline=baseline, unit=unit,
                                 progress=(lambda d, t, m=m: bar(description=f"{m} ({d}/{t} passes)")),
                                 **(superpixel if m in SUPERPIXEL else blackbox.get(m, {})))
                for k, i in enumerate(range(s, e)):
                    a = res.attribution[k]
                    results[m][i] = a
                    if summary[i] is None:
                        summary[i] = _prediction(res, k, out_t.name, cax)
                    written.append(render.save_npy(a, out_dir / f"{items[i].name}.{m}.npy"))
                    if items[i].display is not None:
                        a2 = render.to_2d(a, channel_axis=item_channel_axis)
                        pic = render.overlay(items[i].display, a2, signed=render.is_signed(m), alpha=alpha)
                        written.append(render.save_png(pic, out_dir / f"{items[i].name}.{m}.png"))
                bar(advance=e - s)

    # one line per item: prediction, explained target, score
    w = max(len(it.source.name if it.source.suffix.lower() != ".npy" else it.name) for it in items)
    for it, s in zip(items, summary):
        label = it.source.name if it.source.suffix.lower() != ".npy" else it.name
        pred, tgt, score = s
        parts = [f"{label:<{w}}"]
        if pred is not None:
            parts.append(f"predicted {_name(pred, names)}")
        parts.append(f"target {_name(tgt, names) if tgt is not None else '(weights)'}")
        if score is not None:
            parts.append(f"score {out_t.name}[{tgt}] = {score:.4g}")
        typer.echo("  ".join(parts))

    if len(methods) > 1:
        shown = [i for i, it in enumerate(items) if it.display is not None][:32]
        if shown:
            rows, row_titles = [], []
            for i in shown:
                maps = [render.to_2d(results[m][i], channel_axis=item_channel_axis) for m in methods]
                common = render.shared_scale(maps) if shared_scale else None
                rows.append([items[i].display] + [render.overlay(items[i].display, a2, signed=render.is_signed(m),
                                                                 alpha=alpha, scale=common)
                                                  for a2, m in zip(maps, methods)])
                row_titles.append(items[i].name)
            bars = (["signed"] if any(render.is_signed(m) for m in methods) else []) + \
                (["positive"] if any(not render.is_signed(m) for m in methods) else [])
            note = "colour scale: 99.5th percentile of |a|, " + ("shared across each row" if shared_scale else "per map")
            pic = render.grid(rows, titles=["image", *methods], row_titles=row_titles, colorbars=bars, note=note)
            written.append(render.save_png(pic, out_dir / "comparison.png"))
            if len([it for it in items if it.display is not None]) > len(shown):
                typer.echo(f"comparison grid shows the first {len(shown)} images")
    typer.echo(f"wrote {len(written)} files to {out_dir}/ (input {ex.x.name} {fmt_shape(_dims(shape))})")


def _prediction(res, k: int, out_name: str, cax: int):
    """(predicted class, explained target, score of the explained output at the target) for item k."""
    tgt = int(res.target[k]) if res.target is not None else None
    out = res.outputs.get(out_name)
    if out is None or out.ndim < 2:
        return None, tgt, None
    o = np.moveaxis(np.asarray(out[k:k + 1], dtype=np.float64), cax, 1)
    scores = o.reshape(o.shape[0], o.shape[1], -1).sum(axis=2)[0]
    pred = int(np.argmax(scores))
    score = float(scores[tgt]) if tgt is not None and 0 <= tgt < len(scores) else None
    return pred, tgt, score


@app.command("inspect")
def inspect_cmd(
    model: Path = typer.Argument(..., help="The ONNX model.", show_default=False),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    input: Optional[str] = _opt_input(),
    output: Optional[str] = _opt_output(),
    probabilities: bool = _opt_prob(),
):
    """Show inputs, outputs, op types with gradient-rule coverage, the explained path and CAM layers."""
    from onnxplain.graph.describe import describe, format_text

    _existing(model)
    info = describe(model, input=input, output=output, probabilities=probabilities)
    typer.echo(json.dumps(info, indent=2) if as_json else format_text(info))


@app.command()
def demo(
    out_dir: Path = typer.Option(Path("demo_out"), "--out-dir", "-d", help="Folder for the grid and arrays."),
    n: int = typer.Option(6, "--n", min=1, max=64, help="Number of generated images."),
    seed: int = typer.Option(2024, "--seed", help="Seed of the generated images."),
    steps: int = typer.Option(32, "--steps", min=1, help="integrated_gradients: path points."),
    samples: int = typer.Option(16, "--samples", min=1, help="smoothgrad: noisy copies."),
):
    """Explain the shipped shapes classifier with every white-box method; writes demo_methods.png."""
    from onnxplain.io.demo import METHODS, format_table, run_demo
    from onnxplain.io.resources import demo_model

    path = demo_model()
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OnnxplainError(f"--out-dir {out_dir} exists and is not a folder")
    t0 = time.perf_counter()
    with _Progress(n * len(METHODS), "demo") as bar:
        with _running("running the demo model"):
            r = run_demo(out_dir, n=n, seed=seed, steps=steps, samples=samples, model=path, progress=bar)
    correct = int((r.predicted == r.labels).sum())
    typer.echo(f"model  {path}")
    typer.echo(f"images {n} generated shapes (seed {seed}); predicted correctly: {correct}/{n}; "
               "explained target: the true class")
    typer.echo(format_table(r))
    typer.echo(f"wrote {r.files[0]} and {len(r.files) - 1} attribution arrays in {time.perf_counter() - t0:.1f} s")


@app.command("evaluate")
def evaluate_cmd(
    model: str = typer.Argument(..., help="The ONNX model, or 'demo' for the shipped shapes classifier.",
                                show_default=False),
    data: str = typer.Argument(..., help="An .npz file: 'images' float, model-ready (NCHW or NHWC), optional "
                               "'labels' [N] int (default: the predicted classes) and 'masks' [N, H, W] bool; "
                               "or 'shapes' for generated shapes images with ground-truth masks.", show_default=False),
    methods: Optional[list[str]] = typer.Option(None, "--methods", "-m", help="Methods, comma-separated or "
                                                "repeated; 'all' for every one (default: 12 representative ones)."),
    metrics: Optional[list[str]] = typer.Option(None, "--metrics", help="Metrics, comma-separated or repeated: "
                                                "pixel_flipping, region_perturbation, deletion, insertion, "
                                                "pointing_game, relevance_mass, relevance_rank, class_sensitivity, "
                                                "max_sensitivity, cascading, independent, data_randomisation, all "
                                                "(default: every one the data allow)."),
    out_dir: Path = typer.Option(Path("eval_out"), "--out-dir", "-d", help="Folder for the table and plots."),
    n: Optional[int] = typer.Option(None, "--n", min=1, help="Images: 'shapes' generates this many (16); "
                                    "an .npz gives its first N (default: all)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the generated images, the noise and the randomisation."),
    n_sanity: int = typer.Option(4, "--n-sanity", min=1, help="Images for the randomisation tests and "
                                 "max-sensitivity (the first ones)."),
    shuffled_model: Optional[Path] = typer.Option(None, "--shuffled-model", help="The same architecture trained "
                                                  "on shuffled labels, for data randomisation (default for 'demo': "
                                                  "the shipped one)."),
    region: int = typer.Option(8, "--region", min=1, help="Region perturbation: region side in pixels."),
    steps: int = typer.Option(64, "--steps", min=1, help="Perturbation curves: points after the first."),
    fill: str = typer.Option("mean", "--fill", help="Pixel flipping, region perturbation, deletion: removed "
                             "pixels take the image's channel mean ('mean'), uniform noise ('uniform'), a blurred "
                             "copy ('blur') or a number."),
    fraction: float = typer.Option(0.25, "--fraction", min=0.0, max=1.0, help="Pixel flipping and region "
                                   "perturbation: stop once this share of the image is perturbed."),
    radius: float = typer.Option(0.02, "--radius", min=0.0, help="Max-sensitivity: noise bound, a fraction of "
                                 "the image's value range."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Items per onnxruntime call when explaining."),
    layout: Optional[str] = typer.Option(None, "--layout", help="NCHW or NHWC: the layout of the model input and "
                                         "of the data's images (default: from the model input)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON instead of the table."),
):
    """Score methods by faithfulness, localisation, class sensitivity, robustness and sanity checks."""
    from onnxplain.evaluation import runner as E
    from onnxplain.io.shapes_data import make_shapes
    from onnxplain.io.resources import SHUFFLED_MODEL, demo_model, find

    if model == "demo":
        path = demo_model()
        if shuffled_model is None:
            shuffled_model = find(*SHUFFLED_MODEL)
    else:
        path = _existing(Path(model))
    if shuffled_model is not None:
        _existing(Path(shuffled_model))
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OnnxplainError(f"--out-dir {out_dir} exists and is not a folder")
    with _running("loading the model"):
        from onnxplain.runtime.explainer import Explainer, all_methods

        explainer = Explainer(str(path))
    shape, layout = explainer.x.shape, E.layout_of(explainer, layout)
    if data == "shapes":
        side = (shape[1] if layout == "NHWC" else shape[2]) if shape and len(shape) == 4 else None
        images, labels, masks = make_shapes(n or 16, seed=seed, size=side if isinstance(side, int) and side > 0 else 64)
        if layout == "NHWC":
            images = np.ascontiguousarray(images.transpose(0, 2, 3, 1))
        source = f"{len(images)} generated shapes images (seed {seed})"
    else:
        images, labels, masks = E.load_data(data)
        if n is not None:
            images = images[:n]
            labels, masks = (None if a is None else a[:n] for a in (labels, masks))
        source = f"{len(images)} images from {data}"
    chosen = E.resolve(methods, all_methods(), "method") if methods else list(E.DEFAULT_METHODS)
    if metrics:
        wanted = E.resolve(metrics, E.METRICS, "metric")
    else:
        wanted = [m for m in E.METRICS if not (m in E.LOCALISATION and masks is None)
                  and not (m == "data_randomisation" and shuffled_model is None)]
    if fill not in ("mean", "uniform", "blur"):
        try:
            fill = float(fill)
        except ValueError:
            raise OnnxplainError(f"--fill must be mean, uniform, blur or a number, not '{fill}'") from None
    settings = E.Settings(n_sanity=n_sanity, region=region, steps=steps, fill=fill, fraction=fraction, radius=radius,
                          batch_size=batch_size, seed=seed)
    t0 = time.perf_counter()
    with _running("evaluating"):
        with _Progress(None, "evaluate") as bar:
            ev = E.evaluate(explainer, images, labels, masks, methods=chosen, metrics=wanted,
                            shuffled_model=None if shuffled_model is None else str(shuffled_model),
                            settings=settings, progress=bar, layout=layout)
    files = E.write(ev, out_dir)
    if as_json:
        typer.echo(json.dumps(ev.to_json()["summary"], indent=1))
        return
    typer.echo(f"model  {path}")
    typer.echo(f"data   {source}; explained: {'the labels' if labels is not None else 'the predicted classes'}; "
               f"sanity checks on the first {ev.n_sanity}")
    typer.echo(ev.table())
    ratios = E.time_ratios(ev)
    if ratios:
        typer.echo("time per image relative to gradient: " + ", ".join(f"{m} {r:.3g}x" for m, r in ratios.items()))
    typer.echo("↑/↓: higher/lower is better; what each column means: " + str(out_dir / "evaluation.json"))
    typer.echo(f"wrote {len(files)} files to {out_dir} in {time.perf_counter() - t0:.1f} s")


def main():  # pragma: no cover - `python -m onnxplain.cli`
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
