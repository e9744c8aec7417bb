"""`onnxplain explain-dataset` (and `onnxplain evaluate --ray`): a dataset on Ray Data, laptop or cluster."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np
import typer

from onnxplain.cli.app import app
from onnxplain.cli.common import Progress, method_settings, parse_methods, rules_file, with_method_options


class RateBar(Progress):
    """One progress bar on stderr (a terminal only): items done of the total, errors, images/s."""

    def __init__(self, label: str):
        super().__init__(None, label, rate=True)

    def __call__(self, done: int, total, errors: int, rate: float):
        if self.bar:
            self.bar.update(
                self.task,
                completed=done,
                total=total,
                rate=f"{rate:.1f} images/s" + (f", {errors} errors" if errors else ""),
            )


@contextlib.contextmanager
def quiet_ray():
    """Ray's own INFO lines (start-up, execution plans) off the terminal while a command runs."""
    loggers = [logging.getLogger(n) for n in ("ray", "ray.data", "ray._private")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def opt_address():
    return typer.Option(
        None,
        "--address",
        help="A Ray cluster to run on, e.g. ray://head:10001 (default: "
        "RAY_ADDRESS, else a local Ray on this machine's cores).",
    )


def opt_actors():
    return typer.Option(
        None,
        "--actors",
        min=1,
        help="Actors in the pool, each with one Explainer (default: one per CPU, or per GPU with --gpus-per-actor).",
    )


@app.command("explain-dataset")
@with_method_options()
def explain_dataset_cmd(
    model: str = typer.Argument(
        ..., help="The ONNX model, or 'demo' for the shipped shapes classifier.", show_default=False
    ),
    source: list[Path] = typer.Argument(
        ...,
        help="A folder of images (searched recursively), or .parquet / "
        ".npz / .npy files (or a folder of them) with an 'image' column and "
        "optional 'label', 'mask', 'id'.",
        show_default=False,
    ),
    method: list[str] = typer.Option(["gradient"], "--method", "-m", help="Methods, comma-separated or repeated."),
    target: str | None = typer.Option(
        None, "--target", "-t", help="A class index, 'label' (each item's label) or 'predicted' (default)."
    ),
    out_dir: Path = typer.Option(
        Path("explain_out"),
        "--out-dir",
        "-d",
        help="Folder for maps/*.parquet, errors.csv and summary.json; a rerun resumes it.",
    ),
    address: str | None = opt_address(),
    actors: int | None = opt_actors(),
    gpus_per_actor: float = typer.Option(0.0, "--gpus-per-actor", min=0.0, help="GPUs per actor (CUDA sessions)."),
    threads: int | None = typer.Option(
        None,
        "--threads",
        min=0,
        help="onnxruntime intra-op threads per actor (0: onnxruntime's choice; default: the node's cores "
        "shared among its actors, at least 1).",
        show_default=False,
    ),
    shard_size: int | None = typer.Option(
        None,
        "--shard-size",
        min=1,
        help="Items per output shard, the unit of resume (default: about 4 M input values per shard, 16 to 1024 "
        "items, at least 8 shards: 64 px images 341, 224 px 27).",
        show_default=False,
    ),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Items per onnxruntime call."),
    preset: str = typer.Option("raw01", "--preset", help="raw01 (p/255), imagenet, caffe, tf."),
    size: str | None = typer.Option(None, "--size", help="Resize images to H W (default: the model's)."),
    mean: str | None = typer.Option(None, "--mean", help="Per-channel mean, subtracted after scaling."),
    std: str | None = typer.Option(None, "--std", help="Per-channel std, divided after the mean."),
    layout: str | None = typer.Option(None, "--layout", help="NCHW or NHWC (default: from the model input)."),
    **method_options,
):
    """Explain a whole dataset on Ray Data: attribution maps as Parquet shards, one errors table."""
    from onnxplain.dataset.run import explain_dataset, require_ray
    from onnxplain.errors import OnnxplainError

    require_ray()
    if model == "demo":
        from onnxplain.io.resources import demo_model

        model = str(demo_model())
    methods = parse_methods(method or ["gradient"])
    settings = method_settings(methods, method_options)
    for s in settings.values():  # a rule set is checked here, once (the actors read it again)
        if s.get("rules") is not None:
            s["rules"] = rules_file(Path(s["rules"]))
    if target is not None and target not in ("label", "predicted"):
        try:
            target = int(target)
        except ValueError:
            raise OnnxplainError(f"--target takes a class index, 'label' or 'predicted', not '{target}'") from None
    with quiet_ray(), RateBar("explaining") as bar:
        summary = explain_dataset(
            model,
            [str(s) for s in source],
            methods=[m.name for m in methods],
            target=target,
            output=out_dir,
            settings=settings,
            shard_size=shard_size,
            batch_size=batch_size,
            actors=actors,
            gpus_per_actor=gpus_per_actor,
            threads=threads,
            preset=preset,
            size=size,
            mean=mean,
            std=std,
            layout=layout,
            address=address,
            progress=bar,
        )
    skipped = summary.get("shards_skipped")
    typer.echo(f"source  {summary['source']}; methods {', '.join(summary['methods'])}")
    typer.echo(
        f"explained {summary['items']} items in {summary['shards']} shards"
        + (f" ({skipped} shards already written, skipped)" if skipped else "")
        + f" in {summary['seconds']:.1f} s ({summary['images_per_s']:.1f} images/s)"
    )
    if summary["errors_total"]:
        typer.echo(f"{summary['errors_total']} items failed: see {Path(out_dir) / 'errors.csv'}")
    typer.echo(
        f"maps in {Path(out_dir) / 'maps'}/ (Parquet: id, method, prediction, target, score, shape, attribution)"
    )


def evaluate_on_ray(
    model: str, data: str, *, methods, metrics, out_dir, settings, shuffled_model, layout, address, actors, n
):
    """`onnxplain evaluate --ray`: the same table, computed shard by shard on Ray Data."""
    from onnxplain.dataset.run import evaluate_dataset, require_ray

    ray = require_ray()
    source = data
    if data == "shapes":  # generated images, as a ray.data.Dataset
        from onnxplain.graph.load import load_model
        from onnxplain.io.preprocess import infer_layout
        from onnxplain.io.shapes_data import make_shapes

        vi = load_model(model).graph.input[0]  # the image side the model takes (64 when it does not say)
        dims = [d.dim_value or None for d in vi.type.tensor_type.shape.dim]
        nhwc = infer_layout(dims) == "NHWC"
        side = (dims[1] if nhwc else dims[2]) if len(dims) == 4 else None
        images, labels, masks = make_shapes(n or 16, seed=settings.seed, size=side or 64)
        if nhwc:
            images = np.ascontiguousarray(images.transpose(0, 2, 3, 1))
        with quiet_ray():
            from onnxplain.dataset.run import init

            init(address)
            source = ray.data.from_items(
                [
                    {"id": f"shapes:{i}", "image": images[i], "label": int(labels[i]), "mask": masks[i]}
                    for i in range(len(images))
                ]
            )
    with quiet_ray(), RateBar("evaluating") as bar:
        return evaluate_dataset(
            model,
            source,
            methods=methods,
            metrics=metrics,
            output=out_dir,
            settings=settings,
            shuffled_model=shuffled_model,
            layout=layout,
            address=address,
            actors=actors,
            progress=bar,
        )


def evaluate_ray_cmd(
    model: str,
    data: str,
    *,
    methods,
    metrics,
    out_dir,
    n,
    settings,
    shuffled_model,
    layout,
    as_json,
    address,
    actors,
) -> None:
    """The body of `onnxplain evaluate --ray`: ``settings`` as `evaluate` built them, the table as it prints it."""
    import json
    import time

    t0 = time.perf_counter()
    ev = evaluate_on_ray(
        model,
        data,
        methods=methods or None,
        metrics=metrics or None,
        out_dir=out_dir,
        settings=settings,
        shuffled_model=None if shuffled_model is None else str(shuffled_model),
        layout=layout,
        address=address,
        actors=actors,
        n=n,
    )
    if as_json:
        typer.echo(json.dumps(ev.to_json()["summary"], indent=1))
        return
    typer.echo(f"model  {model}")
    typer.echo(f"data   {ev.n} items from {data} (on Ray); sanity checks on the first {ev.n_sanity}")
    typer.echo(ev.table())
    typer.echo("↑/↓: higher/lower is better; what each column means: " + str(Path(out_dir) / "evaluation.json"))
    typer.echo(
        f"wrote the table to {out_dir} in {time.perf_counter() - t0:.1f} s; failed items: "
        f"{Path(out_dir) / 'errors.csv'}"
    )
