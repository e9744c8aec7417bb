"""`onnxplain export`: write the explanation graph of a model."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from onnxplain.cli.app import app, one_line
from onnxplain.cli.common import (
    existing,
    fmt_io,
    human,
    input_bytes,
    method_settings,
    opt_class_axis,
    opt_feed,
    opt_input,
    opt_output,
    opt_prob,
    parse_feeds,
    parse_input_shapes,
    rules_file,
    status,
    with_method_options,
)
from onnxplain.errors import OnnxplainError, ShapeError
from onnxplain.graph.specialise import bind, specialised
from onnxplain.io.outputs import Outputs
from onnxplain.methods.catalog import method as lookup

# the options of the table that change how an explanation graph is built
GRAPH_OPTIONS = ("steps", "chunk", "samples", "noise", "seed", "rules", "layer", "prefix_tokens")


@app.command()
@with_method_options(names=GRAPH_OPTIONS)
def export(
    model: Path = typer.Argument(..., help="The ONNX model to explain.", show_default=False),
    method: str = typer.Option(
        "gradient", "--method", "-m", help="Attribution method (one with a graph head: see the README's table)."
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Where to write the explanation graph (.onnx).", show_default=False
    ),
    input: str | None = opt_input(),
    output: str | None = opt_output(),
    probabilities: bool = opt_prob(),
    target_mode: str = typer.Option(
        "class", "--target-mode", help="class: an int64 'target' input; weights: a 'target_weights' seed tensor."
    ),
    class_axis: int | None = opt_class_axis(),
    feed: list[str] | None = opt_feed(),
    input_shape: list[str] | None = typer.Option(
        None,
        "--input-shape",
        help="Specialise input NAME to a "
        "concrete shape, NAME=1,3,320,320 (repeatable): for rules that "
        "need sizes only known at run time (Resize on symbolic sizes, "
        "pads computed from shapes); the batch axis stays dynamic.",
    ),
    preset: str | None = typer.Option(
        None,
        "--preset",
        help="Record the model's image preprocessing in its "
        "metadata ('onnxplain.preprocess'; explain reads it): raw01, imagenet, caffe, "
        "tf, refined by --mean/--std/--scale/--size/--resize.",
    ),
    mean: str | None = typer.Option(None, "--mean", help="Preprocessing metadata: per-channel mean."),
    std: str | None = typer.Option(None, "--std", help="Preprocessing metadata: per-channel std."),
    scale: str | None = typer.Option(None, "--scale", help="Preprocessing metadata: pixel multiplier."),
    size: str | None = typer.Option(None, "--size", help="Preprocessing metadata: H W."),
    resize: str | None = typer.Option(None, "--resize", help="Preprocessing metadata: crop, pad or stretch."),
    baseline_input: bool = typer.Option(
        False,
        "--baseline-input",
        help="deeplift: give the graph a 'baseline' input (default: a fixed zero baseline, whose forward "
        "pass onnxruntime computes once at session start). integrated_gradients always has the input.",
    ),
    **method_options,
):
    """Write the explanation graph of MODEL: the model plus a backward pass and an `attribution` output."""
    import onnx

    from onnxplain.graph.load import load_model
    from onnxplain.graph.rewrite import Options, build
    from onnxplain.io import preprocess

    t0 = time.perf_counter()
    recipe = None
    if any(v is not None for v in (preset, mean, std, scale, size, resize)):
        recipe = preprocess.resolve(preset, mean=mean, std=std, scale=scale, size=size, resize=resize)
    entry = lookup(method)
    if not entry.exportable:
        raise OnnxplainError(
            f"{entry.name} runs {entry.kind} passes from Python and has no single explanation "
            "graph; use `onnxplain explain` (or Explainer) for it"
        )
    method = entry.name
    settings = method_settings([entry], method_options)[method]
    if settings.get("rules") is not None:
        settings["rules"] = rules_file(Path(settings["rules"]))
    if baseline_input and method not in ("deeplift", "integrated_gradients"):
        raise OnnxplainError(
            f"--baseline-input does not apply to {method} (deeplift and integrated_gradients take one)"
        )
    if target_mode not in ("class", "weights"):
        raise OnnxplainError(f"--target-mode must be 'class' or 'weights', not '{target_mode}'")
    existing(model)
    if out.suffix.lower() != ".onnx" and not out.is_dir():
        raise OnnxplainError(f"output {out} should end in .onnx")
    outputs = Outputs(models=[model], protect=[settings.get("rules")])
    outputs.file(out, size=input_bytes(model), flag="-o/--out").check()  # before any work

    with outputs:
        src = load_model(model)
        before = len(src.graph.node)
        feeds, shapes = parse_feeds(feed), parse_input_shapes(input_shape)
        if feeds:
            src = bind(src, feeds)
        for name, shape in shapes.items():
            src = specialised(src, name, shape)
        graph_params = {k: v for k, v in settings.items() if k in GRAPH_OPTIONS and v is not None}
        options = Options(
            input=input,
            output=output,
            probabilities=probabilities,
            target_mode=target_mode,
            class_axis=class_axis,
            baseline_input=baseline_input,
            **graph_params,
        )
        with status(f"building the {method} graph"):
            try:
                graph = build(src, method, options)
            except ShapeError as exc:
                if shapes:
                    raise
                x = input or next((i.name for i in src.graph.input), "INPUT")
                raise ShapeError(
                    f"{exc}; export the graph for one input shape with --input-shape {x}=N,C,H,W "
                    "(onnxplain explain and the Python API do this by themselves)"
                ) from None
        stored = recipe if recipe is not None else preprocess.from_metadata(src)
        if stored is not None:  # the recipe travels with the explanation graph
            kept = [p for p in graph.metadata_props if p.key != preprocess.METADATA_KEY]
            del graph.metadata_props[:]
            graph.metadata_props.extend(kept)
            graph.metadata_props.add(key=preprocess.METADATA_KEY, value=preprocess.to_metadata(stored))
        _check_and_save(graph, out, onnx)
    elapsed = time.perf_counter() - t0

    meta = {p.key: p.value for p in graph.metadata_props}
    params = "".join(f", {k} {graph_params[k]}" for k in ("steps", "chunk", "samples", "noise") if k in graph_params)
    typer.echo(f"wrote {out} ({human(out.stat().st_size)}) in {elapsed:.2f} s")
    typer.echo(f"  method   {method} (target mode {target_mode}{params})")
    explained = meta.get("onnxplain.explained", "?")
    inner = (
        "" if explained in {o.name for o in src.graph.output} | {output} else " (the logits under the Softmax/Sigmoid)"
    )
    typer.echo(f"  explains input '{meta.get('onnxplain.input', '?')}' -> '{explained}'{inner}")
    if "onnxplain.layer" in meta:
        grid = meta.get("onnxplain.layer_grid")
        typer.echo(f"  layer    '{meta['onnxplain.layer']}'" + (f" (tokens: {grid})" if grid else ""))
    typer.echo(f"  nodes    {before} -> {len(graph.graph.node)}")
    inits = {t.name for t in graph.graph.initializer}
    ins = [vi for vi in graph.graph.input if vi.name not in inits or vi.name in ("target", "baseline")]
    typer.echo("  inputs   " + "; ".join(fmt_io(vi) for vi in ins))
    typer.echo("  outputs  " + "; ".join(fmt_io(vi) for vi in graph.graph.output))
    typer.echo("  check    onnx.checker full_check passed")


def _check_and_save(graph, out: Path, onnx, in_memory_limit: int = 2**31 - 2**26) -> None:
    """Full ONNX check, then an atomic write (:mod:`onnxplain.io.outputs`); nothing is written when the
    check fails. Graphs over ``in_memory_limit`` bytes (protobuf cannot serialise 2 GB) are checked by
    path: written to temporary files beside ``out`` (weights as external data when large), checked,
    then renamed into place."""
    from onnxplain.graph.load import save_model_atomic

    def failed(exc):
        return OnnxplainError(
            f"the explanation graph fails onnx.checker.check_model(full_check=True): "
            f"{one_line(exc, 300)}; nothing was written (please report this)"
        )

    def check(path):
        try:
            onnx.checker.check_model(str(path), full_check=True)
        except Exception as exc:
            raise failed(exc) from None

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
    save_model_atomic(graph, out, check=check)
