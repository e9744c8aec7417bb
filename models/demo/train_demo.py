"""Train the demo CNN on onnxplain.data shapes and export it to ONNX.

Dev-only script (needs torch).  Reproduce with:

    python models/demo/train_demo.py

It writes models/demo/shapes_cnn.onnx and prints held-out accuracy.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # repo root, for onnxplain.data

from onnxplain.data import CLASS_NAMES, make_shapes  # noqa: E402


def stage(cin, cout, pool=True):
    layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return layers


class ShapesCNN(nn.Module):
    """Small CNN: 3 x (Conv3x3-BN-ReLU-MaxPool) with 16-32-64 channels, then
    2 x Conv3x3-BN-ReLU with 64 channels at 8x8, GlobalAveragePool, Linear."""

    def __init__(self, n_classes=len(CLASS_NAMES)):
        super().__init__()
        self.features = nn.Sequential(
            *stage(3, 16), *stage(16, 32), *stage(32, 64),
            *stage(64, 64, pool=False), *stage(64, 64, pool=False),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, n_classes)

    def forward(self, x):
        x = self.pool(self.features(x))
        return self.fc(torch.flatten(x, 1))


def evaluate(model, x, y, batch=500):
    model.eval()
    preds = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            preds.append(model(x[i:i + batch]).argmax(1))
    return (torch.cat(preds) == y).float().mean().item()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=24000)
    ap.add_argument("--n-val", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE / "shapes_cnn.onnx")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.time()
    # Training data uses --seed, validation uses a seed far from it.
    xtr, ytr, _ = make_shapes(args.n_train, seed=args.seed)
    xva, yva, _ = make_shapes(args.n_val, seed=args.seed + 1000)
    xtr, ytr = torch.from_numpy(xtr), torch.from_numpy(ytr)
    xva, yva = torch.from_numpy(xva), torch.from_numpy(yva)
    print(f"data: {args.n_train} train / {args.n_val} val in {time.time() - t0:.1f}s")

    model = ShapesCNN()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"params: {n_params}")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps_per_epoch = (args.n_train + args.batch - 1) // args.batch
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch, pct_start=0.15)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(args.seed)

    t_train = time.time()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(args.n_train, generator=gen)
        total, correct, loss_sum = 0, 0, 0.0
        for i in range(0, args.n_train, args.batch):
            idx = perm[i:i + args.batch]
            xb, yb = xtr[idx], ytr[idx]
            # Random flips keep the label (all classes are flip-symmetric sets).
            if torch.rand(1, generator=gen).item() < 0.5:
                xb = xb.flip(3)
            logits = model(xb)
            loss = loss_fn(logits, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(1) == yb).sum().item()
            total += len(idx)
        acc = evaluate(model, xva, yva)
        print(f"epoch {epoch + 1}/{args.epochs}: loss {loss_sum / total:.4f} "
              f"train acc {correct / total:.4f} val acc {acc:.4f} "
              f"({time.time() - t_train:.0f}s)")
    print(f"training time: {time.time() - t_train:.0f}s")

    model.eval()
    export(model, args.out)
    verify(model, args.out, xva[:64].numpy())
    print(f"total time: {time.time() - t0:.0f}s")


def export(model, path):
    dummy = torch.zeros(1, 3, 64, 64)
    # TrainingMode.PRESERVE skips the eval-mode peephole pass that would fold
    # BatchNorm into Conv; the model is in eval mode, so BN exports as an
    # inference BatchNormalization node.
    torch.onnx.export(
        model, (dummy,), str(path), dynamo=False, opset_version=17,
        input_names=["image"], output_names=["logits"],
        dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}},
        training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False,
    )
    m = onnx.load(str(path))
    m.producer_name = "onnxplain-demo"
    m.doc_string = ("Demo CNN for onnxplain: classifies the single target shape in "
                    "a cluttered 64x64 RGB image. Input 'image' float32 [N,3,64,64] "
                    "in [0,1]; output 'logits' [N,5] for classes "
                    + ", ".join(CLASS_NAMES) + " (no softmax).")
    onnx.save(m, str(path))
    print(f"saved {path}")


def verify(model, path, x):
    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    ops = sorted({n.op_type for n in m.graph.node})
    print(f"ops: {ops}")
    assert "BatchNormalization" in ops, "BN was folded"
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 7, len(x)):
        got = sess.run(["logits"], {"image": x[:n]})[0]
        with torch.no_grad():
            ref = model(torch.from_numpy(x[:n])).numpy()
        assert got.shape == (n, len(CLASS_NAMES))
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    print("onnxruntime matches torch (atol 1e-4); checker full_check passed")


if __name__ == "__main__":
    main()
