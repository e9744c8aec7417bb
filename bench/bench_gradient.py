"""Gradient-family explanation time / plain onnxruntime forward time, measured in one run.

    python bench/bench_gradient.py [--repeats 20] [--ig-steps 32]

For ResNet-18- and MobileNetV2-sized models at 224x224, batch 1, it times the original model's
forward pass and each explanation graph in the same onnxruntime, interleaving the runs so that
machine noise hits both alike, and prints medians and their ratios. It also times building the
explanation graph of a ~6,600-node transformer stack.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import archs  # noqa: E402

import onnxplain  # noqa: E402
from onnxplain.runtime.session import default_providers, make_session  # noqa: E402


def machine() -> str:
    """One line: onnxplain version, CPU, cores and onnxruntime providers (every bench prints it)."""
    import onnxruntime

    return (
        f"onnxplain {onnxplain.__version__}; {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"onnxruntime {onnxruntime.__version__}, providers {default_providers()}"
    )


def rounds(fns: dict, repeats: int) -> dict:
    """Seconds of each callable per round, run round-robin after one warm-up call each."""
    for f in fns.values():
        f()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return times


def interleaved(fns: dict, repeats: int) -> dict:
    """Median seconds of each callable, run round-robin after one warm-up call each."""
    return {k: statistics.median(v) for k, v in rounds(fns, repeats).items()}


def bench_model(name, model, repeats, ig_steps):
    x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
    fwd = make_session(model)
    fns = {"forward": lambda: fwd.run(None, {"input": x})}
    for method in [
        "gradient",
        "input_x_gradient",
        "saliency",
        "guided_backprop",
        "deconvnet",
        "lrp_epsilon",
        "lrp_epsilon_plus",
        "deeplift",
        "gradcam",
        "gradcam_pp",
        "hirescam",
        "layercam",
        "xgradcam",
    ]:
        sess = make_session(onnxplain.build(model, method))
        fns[method] = (lambda s: lambda: s.run(["attribution"], {"input": x}))(sess)
    med = interleaved(fns, repeats)
    base = med["forward"]
    print(f"\n{name}: forward {base * 1e3:.1f} ms (median of {repeats})")
    for k, v in med.items():
        if k != "forward":
            print(f"  {k:<24s} {v * 1e3:8.1f} ms   ratio to forward {v / base:6.2f}")

    ex = onnxplain.Explainer(model)
    ig_graph = make_session(onnxplain.build(model, "integrated_gradients", onnxplain.Options(steps=ig_steps)))
    ig = interleaved(
        {
            "gradient": fns["gradient"],
            "IG in the graph (batch of steps)": lambda: ig_graph.run(["attribution"], {"input": x}),
            "IG by the Python driver (batch 1)": lambda: ex.explain(
                x, "integrated_gradients", steps=ig_steps, batch_size=1
            ),
        },
        max(3, repeats // 8),
    )
    print(f"  integrated gradients, {ig_steps} steps (bound: {ig_steps} x gradient):")
    for k, v in ig.items():
        if k != "gradient":
            print(f"    {k:<34s} {v * 1e3:8.1f} ms   ratio to gradient {v / ig['gradient']:6.2f}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--ig-steps", type=int, default=32)
    args = p.parse_args()
    print(machine())
    for name, make in [("resnet18", archs.resnet18), ("mobilenet_v2", archs.mobilenet_v2)]:
        bench_model(name, make(), args.repeats, args.ig_steps)
    stack = archs.transformer_stack()
    t = time.perf_counter()
    m = onnxplain.build(stack, "gradient")
    dt = time.perf_counter() - t
    print(
        f"\nexport of a {len(stack.graph.node)}-node transformer stack: {dt:.2f} s "
        f"({len(m.graph.node)} nodes in the explanation graph)"
    )


if __name__ == "__main__":
    main()
