"""Black-box methods (occlusion, RISE) on the bench ResNet-18: forward passes per second inside the
method ÷ raw batched onnxruntime forward throughput, and occlusion's wall time.

    python bench/bench_blackbox.py [--repeats 3] [--n-masks 256]

ResNet-18 at 224x224, one image. Occlusion: window 32, stride 16 (13 x 13 = 169 occluded passes,
plus the plain pass). RISE: ``--n-masks`` masks (7 x 7 cells) plus the plain pass. The driver
batches 64 rows per onnxruntime call; the raw reference runs batches of 64 distinct images through
a plain session of the model. The three are interleaved round-robin (bench_gradient.interleaved)
so that machine noise hits all alike. Prints medians, passes per second and the ratios.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
sys.path.insert(1, str(pathlib.Path(__file__).parent.parent))  # this checkout's onnxplain, not an installed one
import archs  # noqa: E402
from bench_gradient import interleaved, machine  # noqa: E402

from onnxplain.methods.occlusion import windows  # noqa: E402
from onnxplain.runtime.explainer import Explainer  # noqa: E402
from onnxplain.runtime.session import make_session  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--n-masks", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args()
    print(machine())
    model = archs.resnet18()
    rng = np.random.default_rng(0)
    x = rng.random((1, 3, 224, 224), dtype=np.float32)
    xs = rng.random((args.batch_size, 3, 224, 224), dtype=np.float32)
    name = model.graph.input[0].name
    raw = make_session(model)
    ex = Explainer(model)
    n_occ = len(windows(224, 224, 32, 16)) + 1  # + the plain pass
    n_rise = args.n_masks + 1
    fns = {
        "raw": lambda: raw.run(None, {name: xs}),
        "occlusion": lambda: ex.explain(x, "occlusion", window=32, stride=16),
        "rise": lambda: ex.explain(x, "rise", n_masks=args.n_masks, seed=0),
    }
    med = interleaved(fns, args.repeats)
    print(f"\ndriver batch size: {ex._drivers['driver'].batch_size}")
    base = args.batch_size / med["raw"]
    print(f"raw forward, batch {args.batch_size}: {med['raw']:.3f} s = {base:.1f} passes/s (median of {args.repeats})")
    for k, n in (("occlusion", n_occ), ("rise", n_rise)):
        rate = n / med[k]
        print(f"{k}: {med[k]:.2f} s for {n} passes = {rate:.1f} passes/s, ratio to raw {rate / base:.3f}")


if __name__ == "__main__":
    main()
