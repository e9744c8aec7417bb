"""Where an explanation graph's time goes: onnxruntime's own per-node kernel times, summed by op type,
for the plain forward pass and each method's graph, on the bench architectures.

    python bench/bench_profile.py [--archs resnet18,mobilenet_v2] [--methods gradient,lrp_epsilon,deeplift]

Each session runs ``--runs`` times with onnxruntime's profiler on (onnxplain's session settings); per node the
fastest run is kept (profiles taken while other jobs run are noisy; the minimum is the least disturbed), then
summed per op type. Convolutions are split into the forward pass's ("Conv (forward)", the model's own nodes)
and the backward pass's ("Conv (backward)", nodes onnxplain added). The NCHWc layout conversions that
onnxruntime inserts are "ReorderInput"/"ReorderOutput". The table this prints is the evidence for the floors
recorded in bench/RESULTS.md: what a backward pass cannot avoid (a transposed convolution per convolution)
against what a rule adds (masks, stabilisers, index bookkeeping).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import sys
import tempfile

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
sys.path.insert(0, str(pathlib.Path(__file__).parent.parent))  # this checkout's onnxplain, not an installed one
from bench_speed import load, load_avg  # noqa: E402

import onnxplain  # noqa: E402
from onnxplain.runtime.session import ort  # noqa: E402


def profile(model, feeds: dict, runs: int) -> collections.Counter:
    """Per op type, the sum over nodes of each node's fastest kernel time (ms) in ``runs`` runs."""
    with tempfile.TemporaryDirectory() as tmp:
        rt = ort()
        so = rt.SessionOptions()  # onnxplain's make_session settings, with the profiler on
        so.log_severity_level = 4
        so.graph_optimization_level = rt.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tmp, "p")
        sess = rt.InferenceSession(
            model.SerializeToString(),
            so,
            providers=["CPUExecutionProvider"],
            disabled_optimizers=["WeightBiasQuantization"],
        )
        for _ in range(runs):
            sess.run(None, feeds)
        events = json.loads(pathlib.Path(sess.end_profiling()).read_text())
    fastest = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e["args"]["op_name"]
            if op == "Conv":
                op = "Conv (backward)" if e["name"].startswith("onnxplain/") else "Conv (forward)"
            key = (op, e["name"])
            fastest[key] = min(fastest.get(key, float("inf")), e["dur"] / 1000)
    out = collections.Counter()
    for (op, _), ms in fastest.items():
        out[op] += ms
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--archs", default="resnet18,resnet50,mobilenet_v2")
    ap.add_argument("--methods", default="gradient,lrp_epsilon,deeplift")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--top", type=int, default=10)
    a = ap.parse_args()
    for name in a.archs.split(","):
        model, source = load(name)
        x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
        feeds = {model.graph.input[0].name: x}
        base = profile(model, feeds, a.runs)
        fwd = sum(base.values())
        print(f"\n{name} ({source}), {load_avg()}: forward {fwd:.2f} ms of kernels")
        for method in a.methods.split(","):
            prof = profile(onnxplain.build(model, method), feeds, a.runs)
            total = sum(prof.values())
            parts = ", ".join(f"{op} {ms:.2f} ({ms / fwd:.2f}x)" for op, ms in prof.most_common(a.top))
            print(f"  {method}: {total:.2f} ms = {total / fwd:.2f} x forward; {parts}")


if __name__ == "__main__":
    main()
