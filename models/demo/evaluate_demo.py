"""Held-out accuracy of models/demo/shapes_cnn.onnx (numpy + onnxruntime only).

Reproduce with:

    python models/demo/evaluate_demo.py            # n=5000, seed=12345

Data come fresh from onnxplain.io.shapes_data.make_shapes with a seed that training
never used (training used seed 0, its validation split seed 1000).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # repo root, for onnxplain.io.shapes_data

from onnxplain.io.shapes_data import CLASS_NAMES, make_shapes  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=HERE / "shapes_cnn.onnx")
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--batch", type=int, default=250)
    args = ap.parse_args()

    images, labels, _ = make_shapes(args.n, seed=args.seed)
    sess = ort.InferenceSession(str(args.model), providers=["CPUExecutionProvider"])
    preds = np.concatenate(
        [
            sess.run(["logits"], {"image": images[i : i + args.batch]})[0].argmax(axis=1)
            for i in range(0, args.n, args.batch)
        ]
    )

    k = len(CLASS_NAMES)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (labels, preds), 1)
    print(f"model: {args.model.name}  n={args.n}  seed={args.seed}")
    print(f"accuracy: {np.mean(preds == labels):.4f}")
    print()
    print("| class | n | accuracy |")
    print("|---|---:|---:|")
    for c, name in enumerate(CLASS_NAMES):
        n_c = confusion[c].sum()
        print(f"| {name} | {n_c} | {confusion[c, c] / max(n_c, 1):.4f} |")
    print()
    print("confusion (rows: true, cols: predicted):")
    print("          " + " ".join(f"{name[:8]:>8}" for name in CLASS_NAMES))
    for c, name in enumerate(CLASS_NAMES):
        print(f"{name[:8]:>8}  " + " ".join(f"{v:8d}" for v in confusion[c]))


if __name__ == "__main__":
    main()
