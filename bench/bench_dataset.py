"""Images per second of `onnxplain.dataset.explain_dataset` on a local Ray, against a plain Explainer loop.

Three cases: 256 generated shapes images (64 px) on the shipped demo model, in shards of 32; 4096 of them
(``--n-large``), gradient only, in explain_dataset's default shards (341 images: about 4 M input values),
long enough for a steady state (256 demo images take 0.2 s once the actors are up, so the first case's
"steady" rate is mostly Ray's scheduling noise); and 64 images at 224 px on a ResNet-18-shaped model
(bench/archs.py, random weights), in shards of 8. Methods: gradient, gradcam, occlusion (at 224 px with a
56 px window and stride, 17 passes per image, so that the run stays within minutes on two cores).

Every configuration runs ``--repeats`` times, round-robin, and the medians are printed (the machine's
speed drifts).

- loop: one process, ``Explainer.run`` over batches of 16, after one warm-up batch (graphs built), with
  onnxruntime's default threads (one per core) and with 1 thread;
- Ray, 1 and 2 actors with their default intra-op threads (the node's cores shared among the actors:
  2 and 1 on a 2-core machine; the line prints them), the source an .npz file read by the actors:
  "steady" is the rate after the first shard came back (the pool is up, graphs built); "all" includes
  starting the actors and building their graphs (Ray itself is started once, before, and not counted).

    python bench/bench_dataset.py            # all three cases
    python bench/bench_dataset.py --quick    # the 64 px cases only
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from onnxplain import __version__  # noqa: E402
from onnxplain.io.resources import demo_model  # noqa: E402
from onnxplain.io.shapes_data import make_shapes  # noqa: E402
from onnxplain.runtime.explainer import Explainer  # noqa: E402
from onnxplain.runtime.session import set_default_threads  # noqa: E402

METHODS = ("gradient", "gradcam", "occlusion")


def loop_rate(model: str, x: np.ndarray, method: str, opts: dict, threads: int, batch: int = 16) -> float:
    set_default_threads(threads)
    try:
        ex = Explainer(model)
        ex.run(x[:batch], method, batch_size=batch, **opts)  # graphs and sessions, not timed
        t0 = time.perf_counter()
        for i in range(0, len(x), batch):
            ex.run(x[i : i + batch], method, batch_size=batch, **opts)
        return len(x) / (time.perf_counter() - t0)
    finally:
        set_default_threads(0)


def ray_rate(model: str, data: Path, method: str, opts: dict, actors: int, shard: int, work: Path) -> tuple:
    from onnxplain.dataset import explain_dataset

    out = work / f"out-{method}-{actors}"
    shutil.rmtree(out, ignore_errors=True)
    marks = []
    t0 = time.perf_counter()
    summary = explain_dataset(
        model,
        [data],
        methods=[method],
        output=out,
        shard_size=shard,
        actors=actors,
        method_options=opts,
        progress=lambda done, total, errors, rate: marks.append((time.perf_counter(), done)),
    )
    total = time.perf_counter() - t0
    assert summary["errors"] == 0, summary
    (t1, n1), (t2, n2) = marks[0], marks[-1]
    steady = (n2 - n1) / (t2 - t1) if t2 > t1 else float("nan")
    return steady, n2 / total, summary["threads_per_actor"]


def case(name, model, x, opts, shard, work, repeats, methods=METHODS) -> list:
    """Every configuration ``repeats`` times, interleaved round-robin; the medians are reported. ``shard``
    None: explain_dataset's default shard size."""
    data = work / f"{name}.npz"
    np.savez(data, images=x)
    rows = []
    for m in methods:
        o = opts.get(m, {})
        runs = {k: [] for k in ("loop", "loop1", "a1", "a1all", "a2", "a2all")}
        threads = {}
        for _ in range(repeats):
            runs["loop"].append(loop_rate(model, x, m, o, threads=0))
            runs["loop1"].append(loop_rate(model, x, m, o, threads=1))
            for k, actors in (("a1", 1), ("a2", 2)):
                steady, everything, threads[k] = ray_rate(model, data, m, o, actors, shard, work)
                runs[k].append(steady)
                runs[k + "all"].append(everything)
        med = {k: float(np.median(v)) for k, v in runs.items()}
        rows.append((name, m, med))
        print(
            f"{name:<12} {m:<10} loop {med['loop']:8.1f} (1 thread {med['loop1']:8.1f})   1 actor {med['a1']:8.1f} "
            f"(all {med['a1all']:7.1f})   2 actors {med['a2']:8.1f} (all {med['a2all']:7.1f})   2 actors / loop "
            f"{med['a2'] / med['loop']:5.2f}x  1 actor / loop {med['a1'] / med['loop']:5.2f}x   "
            f"2 actors / 1-thread loop {med['a2'] / med['loop1']:5.2f}x  1 actor / 1-thread loop "
            f"{med['a1'] / med['loop1']:5.2f}x   threads per actor: 1 actor {threads['a1']}, 2 actors {threads['a2']}",
            flush=True,
        )
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the 64 px case only")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--n224", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3, help="rounds, interleaved; medians reported")
    ap.add_argument("--n-large", type=int, default=4096, help="demo images of the default-shard case (0: skip)")
    args = ap.parse_args()
    import onnxruntime as ort
    import ray

    print(
        f"onnxplain {__version__}; onnxruntime {ort.__version__}; ray {ray.__version__}; {platform.machine()}; "
        f"{os.cpu_count()} cores; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    work = Path(tempfile.mkdtemp(prefix="bench_dataset_"))
    try:
        print("images/s; Ray: steady (all, with actor start-up)")
        x, _, _ = make_shapes(args.n, seed=0)
        case("demo 64px", str(demo_model()), x, {"occlusion": {"window": 16, "stride": 8}}, 32, work, args.repeats)
        if args.n_large:  # enough images for a steady state: default shards (about 4 M input values each)
            x, _, _ = make_shapes(args.n_large, seed=1)
            case(f"demo {args.n_large}", str(demo_model()), x, {}, None, work, args.repeats, ["gradient"])
        if not args.quick:
            import onnx
            from archs import resnet18

            path = work / "resnet18.onnx"
            onnx.save(resnet18(), str(path))
            x, _, _ = make_shapes(args.n224, seed=0, size=224)
            case("resnet18 224", str(path), x, {"occlusion": {"window": 56, "stride": 56}}, 8, work, args.repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        ray.shutdown()
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
