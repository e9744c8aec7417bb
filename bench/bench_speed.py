"""Every white-box method's time over the forward pass, per architecture, with the issue's targets.

    python bench/bench_speed.py [--repeats 7] [--archs resnet18,mobilenet_v2] [--ig-archs resnet18] [--k 1,8,32]

Architectures: the torchvision exports in bench/.models (bench/export_torchvision.py, needs torch once), else
bench/archs.py's torch-free builders. Per architecture, in one process, the plain forward session and every
explanation graph's session (same thread settings: onnxplain's make_session) run round-robin; each line is a
median. Also: IG(32) over the gradient (the saved graph over the gradient graph, Explainer.explain over
Explainer.explain), Explainer.explain over its raw graph session (API overhead, batch 1), and K classes of one
image in one pass over K single-target gradient runs. The load average is printed before and after each
architecture: figures taken under load are not target claims.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

import numpy as np
import onnx

sys.path.insert(0, str(pathlib.Path(__file__).parent))
sys.path.insert(0, str(pathlib.Path(__file__).parent.parent))  # this checkout's onnxplain, not an installed one
import archs  # noqa: E402
from bench_gradient import interleaved, machine  # noqa: E402

import onnxplain  # noqa: E402
from onnxplain.graph.rewrite import Options  # noqa: E402
from onnxplain.runtime.explainer import FOLD_CHUNK  # noqa: E402
from onnxplain.runtime.session import make_session  # noqa: E402

MODELS = pathlib.Path(__file__).parent / ".models"
METHODS = ["gradient", "input_x_gradient", "saliency", "guided_backprop", "lrp_epsilon", "lrp_epsilon_plus", "deeplift"]
BOUND = {
    "gradient": 2.5,
    "input_x_gradient": 2.5,
    "saliency": 2.5,
    "guided_backprop": 2.5,
    "lrp_epsilon": 3.0,
    "lrp_epsilon_plus": 4.5,
    "deeplift": 4.0,
}


def load(name):
    path = MODELS / f"{name}.onnx"
    if path.exists():
        return onnx.load(str(path)), "torchvision"
    return getattr(archs, name)(), "bench/archs.py"


def load_avg() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def bench(name, repeats, ig, ks):
    model, source = load(name)
    x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
    inp = model.graph.input[0].name
    print(f"\n{name} ({source}), {load_avg()}")
    fwd = make_session(model)
    fns = {"forward": lambda: fwd.run(None, {inp: x})}
    for method in METHODS:
        try:
            s = make_session(onnxplain.build(model, method))
        except Exception as e:  # noqa: BLE001 - reported, the bench goes on
            print(f"  {method}: {type(e).__name__}: {str(e)[:120]}")
            continue
        fns[method] = lambda s=s: s.run(["attribution"], {inp: x})
    ex = onnxplain.Explainer(model)
    ex.explain(x, "gradient")
    fns["Explainer.explain(gradient)"] = lambda: ex.explain(x, "gradient")
    med = interleaved(fns, repeats)
    base = med["forward"]
    print(f"  forward {base * 1e3:.1f} ms (median of {repeats})")
    rows = {}
    for k, v in med.items():
        if k in BOUND:
            ok = "meets" if v / base <= BOUND[k] else "misses"
            rows[k] = v / base
            print(f"  {k:<28s} {v * 1e3:8.1f} ms  x forward {v / base:6.2f}  (bound {BOUND[k]}: {ok})")
    api = med["Explainer.explain(gradient)"] / med["gradient"]
    print(
        f"  {'Explainer.explain(gradient)':<28s} {med['Explainer.explain(gradient)'] * 1e3:8.1f} ms  "
        f"x raw gradient session {api:6.3f}  (bound 1.05: {'meets' if api <= 1.05 else 'misses'})"
    )
    rows["api"] = api
    if ig:
        s = make_session(onnxplain.build(model, "integrated_gradients", Options(steps=32)))  # default chunk
        m = interleaved(
            {
                "gradient": fns["gradient"],
                "ig": lambda: s.run(["attribution"], {inp: x}),
                "api gradient": fns["Explainer.explain(gradient)"],
                "api ig": lambda: ex.explain(x, "integrated_gradients", steps=32),
            },
            max(2, repeats // 3),
        )
        for label, key, over in (("in the graph", "ig", "gradient"), ("from Python", "api ig", "api gradient")):
            r = m[key] / m[over]
            rows[key.replace(" ", "_")] = r
            print(
                f"  {'IG(32) ' + label:<28s} {m[key] * 1e3:8.1f} ms  x gradient {r:6.2f}  "
                f"(bound 32: {'meets' if r <= 32 else 'misses'})"
            )
    if ks:
        try:
            many = make_session(onnxplain.build(model, "gradient", Options(target_mode="classes")))
        except Exception as e:  # noqa: BLE001
            print(f"  many targets: {type(e).__name__}: {str(e)[:120]}")
        else:
            fk = {"gradient": fns["gradient"], "api gradient": fns["Explainer.explain(gradient)"]}
            for k in ks:
                t = np.arange(k, dtype=np.int64)[None] * 7
                fk[k] = lambda t=t: many.run(["attribution"], {inp: x, "target": t})
                fk[f"api {k}"] = lambda t=t: ex.run(x, "gradient", target=t)  # FOLD_CHUNK columns per run
            m = interleaved(fk, max(2, repeats // 2))
            for k in ks:
                r, r_api = m[k] / (k * m["gradient"]), m[f"api {k}"] / (k * m["api gradient"])
                rows[f"K={k}"] = r
                print(
                    f"  K={k:<3d} classes in one pass  {m[k] * 1e3:8.1f} ms  x (K x gradient) {r:5.2f}  "
                    f"x forward {m[k] / base:6.2f}; API (chunks of {FOLD_CHUNK}) x (K x gradient) {r_api:5.2f}"
                )
    print(f"  ({load_avg()})")
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument(
        "--archs", default="resnet18,resnet50,mobilenet_v2,mobilenet_v3_large,efficientnet_b0,convnext_tiny,vit_b_16"
    )
    p.add_argument("--ig-archs", default="resnet18,mobilenet_v2")
    p.add_argument("--k", default="1,8,32")
    p.add_argument("--k-archs", default="resnet18,mobilenet_v2")
    a = p.parse_args()
    print(machine(), "|", onnxplain.__file__)
    ks = [int(k) for k in a.k.split(",") if k]
    table = {}
    for name in a.archs.split(","):
        if not (MODELS / f"{name}.onnx").exists() and not hasattr(archs, name):
            print(f"\n{name}: no model (run bench/export_torchvision.py)")
            continue
        table[name] = bench(name, a.repeats, name in a.ig_archs.split(","), ks if name in a.k_archs.split(",") else [])
    cols = METHODS + ["api", "ig", "api_ig"]
    print("\n| arch | " + " | ".join(cols) + " |\n|---|" + "---:|" * len(cols))
    for name, rows in table.items():
        print(f"| {name} | " + " | ".join(f"{rows[c]:.2f}" if c in rows else "-" for c in cols) + " |")


if __name__ == "__main__":
    main()
