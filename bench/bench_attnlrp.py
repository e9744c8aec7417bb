"""AttnLRP (and the other transformer methods) / forward time on a ViT-B/16-shaped model, measured in one run.

    python bench/bench_attnlrp.py [--repeats 5] [--depth 12]

Builds a ViT-B/16-shaped ONNX (224x224, patch 16, dim 768, 12 blocks of 12 heads, MLP 3072, class token,
~86M parameters, random weights) with torch (dev only: torch.onnx.export, TorchScript, opset 17; the modules
of models/demo/train_transformers.py), then times onnxruntime's forward pass of the model and the explanation
graphs (built beforehand) at batch 1, round-robin, and prints medians and ratios to the forward pass.
The target of the issue: AttnLRP <= 4x the forward pass.
"""

from __future__ import annotations

import argparse
import io
import pathlib
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # this checkout's onnxplain
sys.path.insert(0, str(HERE.parent / "models" / "demo"))

from bench_gradient import interleaved, machine  # noqa: E402

import onnxplain  # noqa: E402
from onnxplain.runtime.session import make_session  # noqa: E402

METHODS = ("gradient", "attnlrp", "cp_lrp", "lrp_epsilon", "attention_rollout", "chefer")


def vit_b16(depth: int):
    import onnx
    import torch
    from train_transformers import ShapesViT

    torch.manual_seed(0)
    model = ShapesViT(image=224, patch=16, dim=768, depth=depth, heads=12, mlp=3072, classes=1000).eval()
    buf = io.BytesIO()
    torch.onnx.export(
        model,
        (torch.zeros(1, 3, 224, 224),),
        buf,
        dynamo=False,
        opset_version=17,
        input_names=["input"],
        output_names=["logits"],
    )
    return onnx.load_from_string(buf.getvalue())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--depth", type=int, default=12)
    args = ap.parse_args()
    print(machine())
    t0 = time.time()
    model = vit_b16(args.depth)
    print(f"ViT-B/16-shaped model, {args.depth} blocks: exported in {time.time() - t0:.1f} s")
    x = np.random.default_rng(0).normal(size=(1, 3, 224, 224)).astype(np.float32)
    forward = make_session(model)
    fns = {"forward": lambda: forward.run(None, {"input": x})}
    for m in METHODS:
        t0 = time.time()
        g = onnxplain.build(model, m)
        sess = make_session(g)
        print(f"{m}: graph built and session made in {time.time() - t0:.1f} s")
        fns[m] = (lambda s: lambda: s.run(["attribution"], {"input": x}))(sess)
    med = interleaved(fns, args.repeats)
    print("\n| | ms | x forward |\n|---|---:|---:|")
    for k, v in med.items():
        print(f"| {k} | {v * 1000:.0f} | {v / med['forward']:.2f} |")


if __name__ == "__main__":
    main()
