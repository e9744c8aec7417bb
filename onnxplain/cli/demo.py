"""`onnxplain demo`: the shipped shapes classifier explained by every white-box method family."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from onnxplain.cli.app import app
from onnxplain.cli.common import Progress, opt_device, opt_providers, running, session_options
from onnxplain.errors import OnnxplainError
from onnxplain.io.outputs import Outputs


@app.command()
def demo(
    out_dir: Path = typer.Option(Path("demo_out"), "--out-dir", "-d", help="Folder for the grid and arrays."),
    n: int = typer.Option(6, "--n", min=1, max=64, help="Number of generated images."),
    seed: int = typer.Option(2024, "--seed", help="Seed of the generated images."),
    steps: int = typer.Option(32, "--steps", min=1, help="integrated_gradients: path points."),
    samples: int = typer.Option(16, "--samples", min=1, help="smoothgrad: noisy copies."),
    task: str = typer.Option(
        "classify",
        "--task",
        help="classify (the shapes classifier), detect (the shipped "
        "detector, each object's box explained) or segment (the segmenter, each object's mask).",
    ),
    device: str = opt_device(),
    providers: str | None = opt_providers(),
):
    """Explain the shipped shapes classifier with every white-box method (or, with --task detect/segment,
    the shipped detector/segmenter); writes demo_methods.png (demo_detect.png, demo_segment.png)."""
    from onnxplain.io.demo import METHODS, format_table, run_demo
    from onnxplain.io.resources import demo_model

    out_dir = Path(out_dir)
    sessions = session_options(device, providers)
    if task != "classify":
        _task_demo(out_dir, task, n, seed, sessions)
        return
    path = demo_model()
    outputs = Outputs(models=[path]).folder(out_dir, "--out-dir")
    outputs.file(out_dir / "demo_methods.png")
    for m in METHODS:
        outputs.file(out_dir / f"demo_{m}.npy", size=n * 3 * 64 * 64 * 4 + 128)
    outputs.check()  # before any work
    t0 = time.perf_counter()
    with Progress(n * len(METHODS), "demo") as bar, outputs, running("running the demo model"):
        r = run_demo(out_dir, n=n, seed=seed, steps=steps, samples=samples, model=path, progress=bar, **sessions)
    correct = int((r.predicted == r.labels).sum())
    typer.echo(f"model  {path}")
    typer.echo(
        f"images {n} generated shapes (seed {seed}); predicted correctly: {correct}/{n}; "
        "explained target: the true class"
    )
    typer.echo(format_table(r))
    typer.echo(f"wrote {r.files[0]} and {len(r.files) - 1} attribution arrays in {time.perf_counter() - t0:.1f} s")


def _task_demo(out_dir: Path, task: str, n: int, seed: int, sessions: dict):
    from onnxplain.io.demo import DET_MODEL, SEG_MODEL, format_task_table, run_task_demo
    from onnxplain.io.resources import demo_model

    if task not in ("detect", "segment"):
        raise OnnxplainError(f"--task must be classify, detect or segment, not '{task}'")
    path = demo_model(DET_MODEL if task == "detect" else SEG_MODEL)
    outputs = Outputs(models=[path]).folder(out_dir, "--out-dir")
    outputs.file(out_dir / f"demo_{task}.png")
    outputs.check()  # before any work
    t0 = time.perf_counter()
    with Progress(None, "demo") as bar, outputs, running(f"running the demo {task} model"):
        r = run_task_demo(out_dir, task, n=n, seed=seed, model=path, progress=bar, **sessions)
    typer.echo(f"model  {path}")
    what = (
        "the detection that best matches each object's box"
        if task == "detect"
        else "each object's class map summed over its mask"
    )
    typer.echo(f"images {n} generated scenes (seed {seed}), {r.objects} objects; explained target: {what}")
    typer.echo(format_task_table(r))
    typer.echo(f"wrote {r.files[0]} in {time.perf_counter() - t0:.1f} s")
