"""CAM explanation time / plain onnxruntime forward time for the bench ResNet-18, measured in one run.

    python bench/bench_cam.py [--repeats 5] [--batch-size 64]

ResNet-18 at 224x224, batch 1, default CAM layer (the last block's output, 512 x 7 x 7). It times
the model's forward pass, Grad-CAM in the graph (when onnxplain has the ``gradcam`` head) and the
forward-only Score-CAM and Ablation-CAM (512 perturbed passes each, ``--batch-size`` per
onnxruntime call; Ablation-CAM's through the model's head alone), interleaved round-robin so that
machine noise hits all alike (see bench_gradient.py's ``interleaved``): the quick ones for
10 x ``--repeats`` rounds, Score-CAM with the forward pass for ``--repeats`` rounds. Prints medians
and their ratios to the forward pass.
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

import onnxplain  # noqa: E402
from onnxplain.runtime.session import make_session  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args()
    print(machine())
    model = archs.resnet18()
    x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
    fwd = make_session(model)
    fns = {"forward": lambda: fwd.run(None, {"input": x})}
    sess = make_session(onnxplain.build(model, "gradcam"))
    fns["gradcam (in the graph)"] = lambda: sess.run(["attribution"], {"input": x})
    ex = onnxplain.Explainer(model)
    fns["ablationcam"] = lambda: ex.explain(x, "ablationcam", batch_size=args.batch_size)
    med = interleaved(fns, 10 * args.repeats)  # the quick ones, many rounds
    slow = interleaved(
        {
            "forward": fns["forward"],  # Score-CAM: 512 full passes per image, few rounds
            "scorecam": lambda: ex.explain(x, "scorecam", batch_size=args.batch_size),
        },
        args.repeats,
    )
    layer = next(iter(ex._forward_cams.values())).tap
    print(f"\nresnet18, layer '{layer.name}' {layer.tensor.shape}, batch size {args.batch_size}")
    for block, n in ((med, 10 * args.repeats), (slow, args.repeats)):
        base = block["forward"]
        print(f"  forward {base * 1e3:.1f} ms (median of {n}, interleaved with:)")
        for k, v in block.items():
            if k != "forward":
                print(f"    {k:<24s} {v * 1e3:10.1f} ms   ratio to forward {v / base:8.2f}")


if __name__ == "__main__":
    main()
