"""Seconds per image of every method on the demo model, as ratios to the gradient's, measured in
one interleaved run (the known finding: perturbation methods are far slower than gradients).

    python bench/bench_methods.py [--repeats 3] [--n 4]

The demo CNN (64x64 RGB, 98k parameters) explains ``--n`` generated shapes images per call, each
method with its defaults (occlusion also with a finer stride). Graphs and sessions are built before
timing (bench_gradient.interleaved runs one untimed call of each first); the methods then run
round-robin, ``--repeats`` times, so machine noise hits all alike. Prints the median per image and
the ratio to the gradient.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
sys.path.insert(1, str(pathlib.Path(__file__).parent.parent))  # this checkout's onnxplain
from bench_gradient import interleaved, machine  # noqa: E402

import onnxplain  # noqa: E402
from onnxplain.io.resources import demo_model  # noqa: E402
from onnxplain.io.shapes_data import make_shapes  # noqa: E402

METHODS = {
    "gradient": {},
    "input_x_gradient": {},
    "integrated_gradients": {},
    "smoothgrad": {},
    "guided_backprop": {},
    "lrp_epsilon_plus": {},
    "deeplift": {},
    "gradcam": {},
    "scorecam": {},
    "occlusion": {},
    "occlusion (stride 2)": {"method": "occlusion", "window": 8, "stride": 2},
    "rise": {},
    "lime": {},
    "kernelshap": {},
    "meaningful_perturbation": {},
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n", type=int, default=4)
    args = ap.parse_args()
    x, y, _ = make_shapes(args.n, seed=3)
    ex = onnxplain.Explainer(str(demo_model()))

    def call(name, params):
        params = dict(params)
        method = params.pop("method", name)
        return lambda: ex.run(x, method, target=y, **params)

    med = interleaved({k: call(k, p) for k, p in METHODS.items()}, args.repeats)
    base = med["gradient"]
    print(f"{machine()}; {args.n} images per call, median of {args.repeats}")
    print(f"{'method':<26} {'ms/image':>10} {'x gradient':>11}")
    for k, v in med.items():
        print(f"{k:<26} {v / args.n * 1e3:>10.2f} {v / base:>11.1f}")


if __name__ == "__main__":
    main()
