"""`onnxplain demo`: the shipped shapes classifier explained by every white-box method family."""
from __future__ import annotations

import time
from pathlib import Path

import typer

from onnxplain.errors import OnnxplainError

from onnxplain.cli.app import app
from onnxplain.cli.common import Progress, running


@app.command()
def demo(
    out_dir: Path = typer.Option(Path("demo_out"), "--out-dir", "-d", help="Folder for the grid and arrays."),
    n: int = typer.Option(6, "--n", min=1, max=64, help="Number of generated images."),
    seed: int = typer.Option(2024, "--seed", help="Seed of the generated images."),
    steps: int = typer.Option(32, "--steps", min=1, help="integrated_gradients: path points."),
    samples: int = typer.Option(16, "--samples", min=1, help="smoothgrad: noisy copies."),
    task: str = typer.Option("classify", "--task", help="classify (the shapes classifier), detect (the shipped "
                             "detector, each object's box explained) or segment (the segmenter, each object's mask)."),
):
    """Explain the shipped shapes classifier with every white-box method (or, with --task detect/segment,
    the shipped detector/segmenter); writes demo_methods.png (demo_detect.png, demo_segment.png)."""
    from onnxplain.io.demo import METHODS, format_table, run_demo
    from onnxplain.io.resources import demo_model

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OnnxplainError(f"--out-dir {out_dir} exists and is not a folder")
    if task != "classify":
        _task_demo(out_dir, task, n, seed)
        return
    path = demo_model()
    t0 = time.perf_counter()
    with Progress(n * len(METHODS), "demo") as bar:
        with running("running the demo model"):
            r = run_demo(out_dir, n=n, seed=seed, steps=steps, samples=samples, model=path, progress=bar)
    correct = int((r.predicted == r.labels).sum())
    typer.echo(f"model  {path}")
    typer.echo(f"images {n} generated shapes (seed {seed}); predicted correctly: {correct}/{n}; "
               "explained target: the true class")
    typer.echo(format_table(r))
    typer.echo(f"wrote {r.files[0]} and {len(r.files) - 1} attribution arrays in {time.perf_counter() - t0:.1f} s")




def _task_demo(out_dir: Path, task: str, n: int, seed: int):
    from onnxplain.io.demo import DET_MODEL, SEG_MODEL, TASK_METHODS, format_task_table, run_task_demo
    from onnxplain.io.resources import demo_model

    if task not in ("detect", "segment"):
        raise OnnxplainError(f"--task must be classify, detect or segment, not '{task}'")
    path = demo_model(DET_MODEL if task == "detect" else SEG_MODEL)
    t0 = time.perf_counter()
    with Progress(None, "demo") as bar, running(f"running the demo {task} model"):
        r = run_task_demo(out_dir, task, n=n, seed=seed, model=path, progress=bar)
    typer.echo(f"model  {path}")
    what = "the detection that best matches each object's box" if task == "detect" else \
        "each object's class map summed over its mask"
    typer.echo(f"images {n} generated scenes (seed {seed}), {r.objects} objects; explained target: {what}")
    typer.echo(format_task_table(r))
    typer.echo(f"wrote {r.files[0]} in {time.perf_counter() - t0:.1f} s")
