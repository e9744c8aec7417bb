"""`onnxplain evaluate`: score methods with faithfulness, localisation and sanity metrics."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import typer

from onnxplain.cli.app import app
from onnxplain.cli.common import Progress, existing, opt_device, opt_providers, parse_fill, running, session_options
from onnxplain.errors import OnnxplainError
from onnxplain.io.outputs import Outputs
from onnxplain.validate import parse_bytes


@app.command("evaluate")
def evaluate_cmd(
    model: str = typer.Argument(
        ..., help="The ONNX model, or 'demo' for the shipped shapes classifier.", show_default=False
    ),
    data: str = typer.Argument(
        ...,
        help="An .npz file: 'images' float, model-ready (NCHW or NHWC), optional "
        "'labels' [N] int (default: the predicted classes) and 'masks' [N, H, W] bool; "
        "or 'shapes' for generated shapes images with ground-truth masks.",
        show_default=False,
    ),
    methods: list[str] | None = typer.Option(
        None,
        "--methods",
        "-m",
        help="Methods, comma-separated or repeated; 'all' for every one (default: 12 representative ones).",
    ),
    metrics: list[str] | None = typer.Option(
        None,
        "--metrics",
        help="Metrics, comma-separated or repeated: "
        "pixel_flipping, region_perturbation, deletion, insertion, "
        "pointing_game, relevance_mass, relevance_rank, class_sensitivity, "
        "max_sensitivity, cascading, independent, data_randomisation, all "
        "(default: every one the data allow).",
    ),
    out_dir: Path = typer.Option(Path("eval_out"), "--out-dir", "-d", help="Folder for the table and plots."),
    n: int | None = typer.Option(
        None, "--n", min=1, help="Images: 'shapes' generates this many (16); an .npz gives its first N (default: all)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the generated images, the noise and the randomisation."),
    n_sanity: int = typer.Option(
        4, "--n-sanity", min=1, help="Images for the randomisation tests and max-sensitivity (the first ones)."
    ),
    shuffled_model: Path | None = typer.Option(
        None,
        "--shuffled-model",
        help="The same architecture trained "
        "on shuffled labels, for data randomisation (default for 'demo': "
        "the shipped one).",
    ),
    region: int = typer.Option(8, "--region", min=1, help="Region perturbation: region side in pixels."),
    steps: int = typer.Option(64, "--steps", min=1, help="Perturbation curves: points after the first."),
    fill: str = typer.Option(
        "mean",
        "--fill",
        help="Pixel flipping, region perturbation, deletion: removed "
        "pixels take the image's channel mean ('mean'), uniform noise ('uniform'), a blurred "
        "copy ('blur') or a number.",
    ),
    fraction: float = typer.Option(
        0.25,
        "--fraction",
        min=0.0,
        max=1.0,
        help="Pixel flipping and region perturbation: stop once this share of the image is perturbed.",
    ),
    radius: float = typer.Option(
        0.02, "--radius", min=0.0, help="Max-sensitivity: noise bound, a fraction of the image's value range."
    ),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Items per onnxruntime call when explaining."),
    layout: str | None = typer.Option(
        None,
        "--layout",
        help="NCHW or NHWC: the layout of the model input and of the data's images (default: from the model input).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON instead of the table."),
    device: str = opt_device(),
    providers: str | None = opt_providers(),
    report: Path | None = typer.Option(
        None,
        "--report",
        help="Also write a self-contained HTML report (the "
        "table, timings, curves and sanity plots, embedded; no network) here.",
    ),
    max_memory: str | None = typer.Option(
        None,
        "--max-memory",
        help="Refuse runs whose tensors need more (e.g. 8G; default: half of this machine's memory).",
    ),
    use_ray: bool = typer.Option(
        False,
        "--ray",
        help="Run on Ray Data, shard by shard (pip install "
        '"onnxplain[ray]"); DATA may then also be a folder of images or .parquet/.npz/'
        ".npy shards, and a rerun resumes.",
    ),
    address: str | None = typer.Option(
        None, "--address", help="--ray: a cluster, e.g. ray://head:10001 (default: RAY_ADDRESS, else a local Ray)."
    ),
    actors: int | None = typer.Option(
        None, "--actors", min=1, help="--ray: actors in the pool (default: one per CPU)."
    ),
):
    """Score methods by faithfulness, localisation, class sensitivity, robustness and sanity checks."""
    from onnxplain.evaluation import runner as E
    from onnxplain.io.resources import SHUFFLED_MODEL, demo_model, find
    from onnxplain.io.shapes_data import make_shapes

    if model == "demo":
        path = demo_model()
        if shuffled_model is None:
            shuffled_model = find(*SHUFFLED_MODEL)
    else:
        path = existing(Path(model))
    if shuffled_model is not None:
        existing(Path(shuffled_model))
    out_dir = Path(out_dir)
    settings = E.Settings(
        n_sanity=n_sanity,
        region=region,
        steps=steps,
        fill=parse_fill(fill),
        fraction=fraction,
        radius=radius,
        batch_size=batch_size,
        seed=seed,
    )
    if use_ray or address or actors:
        from onnxplain.cli.dataset import evaluate_ray_cmd

        return evaluate_ray_cmd(
            str(path),
            data,
            methods=methods,
            metrics=metrics,
            out_dir=out_dir,
            n=n,
            settings=settings,
            shuffled_model=shuffled_model,
            layout=layout,
            as_json=as_json,
            address=address,
            actors=actors,
        )
    outputs = Outputs(models=[path, shuffled_model], protect=[None if data == "shapes" else Path(data)])
    outputs.folder(out_dir, "--out-dir")
    for name in ("evaluation.csv", "evaluation.json", "evaluation.md"):
        outputs.file(out_dir / name)
    if report is not None:
        outputs.file(Path(report), flag="--report")
    outputs.check()  # before any work
    with running("loading the model"):
        from onnxplain.runtime.explainer import Explainer, all_methods

        explainer = Explainer(
            str(path),
            max_memory=None if max_memory is None else parse_bytes(max_memory),
            **session_options(device, providers),
        )
    shape, layout = explainer.x.shape, E.layout_of(explainer, layout)
    if data == "shapes":
        side = (shape[1] if layout == "NHWC" else shape[2]) if shape and len(shape) == 4 else None
        if isinstance(side, int) and 0 < side < 16:
            raise OnnxplainError(
                f"'shapes' images are at least 16x16 pixels; the model input is {side}x{side} "
                "(pass your own data as an .npz file)"
            )
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
        wanted = [
            m
            for m in E.METRICS
            if not (m in E.LOCALISATION and masks is None)
            and not (m == "data_randomisation" and shuffled_model is None)
        ]
    t0 = time.perf_counter()
    with outputs, running("evaluating"):
        with Progress(None, "evaluate") as bar:
            ev = E.evaluate(
                explainer,
                images,
                labels,
                masks,
                methods=chosen,
                metrics=wanted,
                shuffled_model=None if shuffled_model is None else str(shuffled_model),
                settings=settings,
                progress=bar,
                layout=layout,
            )
        files = E.write(ev, out_dir)
        if report is not None:
            files.append(_report(report, ev, path, source, explainer))
    if as_json:
        typer.echo(json.dumps(ev.to_json()["summary"], indent=1))
        return
    typer.echo(f"model  {path}")
    typer.echo(
        f"data   {source}; explained: {'the labels' if labels is not None else 'the predicted classes'}; "
        f"sanity checks on the first {ev.n_sanity}"
    )
    typer.echo(ev.table())
    ratios = E.time_ratios(ev)
    if ratios:
        typer.echo("time per image relative to gradient: " + ", ".join(f"{m} {r:.3g}x" for m, r in ratios.items()))
    typer.echo("↑/↓: higher/lower is better; what each column means: " + str(out_dir / "evaluation.json"))
    typer.echo(f"wrote {len(files)} files to {out_dir} in {time.perf_counter() - t0:.1f} s")


def _report(path: Path, ev, model, source: str, explainer) -> Path:
    """The evaluation as one self-contained HTML file: the table, time per image, curves, sanity plots."""
    from onnxplain.evaluation import runner as E
    from onnxplain.io.report_html import Report

    r = Report(f"onnxplain evaluate: {Path(model).name}", f"{source}; providers: {', '.join(explainer.providers)}")
    r.heading("Scores (mean ± standard error over images)")
    cols = ev.columns()
    rows = []
    for m in ev.methods:
        row = [m]
        for c in cols:
            mean, sem = ev.mean(c.key, m), ev.sem(c.key, m)
            row.append(
                "-" if not np.isfinite(mean) else f"{mean:.3g} ± {sem:.2g}" if np.isfinite(sem) else f"{mean:.3g}"
            )
        rows.append(row)
    r.table(["method", *[f"{c.title} {c.better}" for c in cols]], rows)
    r.paragraph("; ".join(f"{c.title}: {c.about}" for c in cols))
    ratios = E.time_ratios(ev)
    if "seconds" in ev.values:
        r.heading("Method timings")
        r.table(
            ["method", "seconds per image", "relative to gradient"],
            [[m, float(ev.mean("seconds", m)), float(ratios[m]) if m in ratios else "-"] for m in ev.methods],
        )
    plots = E.curve_plots(ev)
    if plots:
        r.heading("Perturbation curves")
        for key, picture in plots.items():
            r.image(picture, key.replace("_", " "))
    sanity = [(k, E.sanity_profile(ev, k)) for k in ("cascading", "independent") if k in ev.sanity]
    if sanity or (ev.cascade_maps and len(next(iter(ev.cascade_maps.values()))) > 1):
        r.heading("Sanity checks")
        for kind, picture in sanity:
            r.image(picture, f"{kind} randomisation: similarity to the trained model's maps, layer by layer")
        if ev.cascade_maps and len(next(iter(ev.cascade_maps.values()))) > 1:
            r.image(E.cascade_grid(ev), "maps as the layers are randomised, top down")
    return r.save(path)
