"""Train the demo CNN on onnxplain.io.shapes_data shapes and export it to ONNX.

Dev-only script (needs torch).  Reproduce with:

    python models/demo/train_demo.py

It writes models/demo/shapes_cnn.onnx and prints held-out accuracy.

With --shuffle-labels it instead trains the same architecture on randomly
permuted training labels until it memorises them, and writes
models/demo/shapes_cnn_shuffled.onnx: the model for the data randomisation
test of Adebayo et al. (2018), "Sanity Checks for Saliency Maps".

    python models/demo/train_demo.py --shuffle-labels
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # repo root, for onnxplain.io.shapes_data

from onnxplain.io.shapes_data import CLASS_NAMES, make_shapes  # noqa: E402


def stage(cin, cout, pool=True):
    layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return layers


N_CLASSES = len(CLASS_NAMES)


class ShapesCNN(nn.Module):
    """Small CNN: 3 x (Conv3x3-BN-ReLU-MaxPool) with 16-32-64 channels, then
    2 x Conv3x3-BN-ReLU with 64 channels at 8x8, GlobalAveragePool, Linear."""

    def __init__(self, n_classes=N_CLASSES):
        super().__init__()
        self.features = nn.Sequential(
            *stage(3, 16),
            *stage(16, 32),
            *stage(32, 64),
            *stage(64, 64, pool=False),
            *stage(64, 64, pool=False),
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
            preds.append(model(x[i : i + batch]).argmax(1))
    return (torch.cat(preds) == y).float().mean().item()


DEFAULTS = dict(n_train=24000, epochs=8, batch=128, lr=3e-3, out=HERE / "shapes_cnn.onnx")
# Memorising random labels: a small training set, many epochs, a constant
# learning rate and no flip augmentation (a flipped image is a new image that
# would need its own random label).
SHUFFLED_DEFAULTS = dict(
    n_train=500, epochs=300, batch=32, lr=1e-3, target_train_acc=0.95, out=HERE / "shapes_cnn_shuffled.onnx"
)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--shuffle-labels",
        action="store_true",
        help="train on permuted labels (data randomisation test); changes the defaults below, see SHUFFLED_DEFAULTS",
    )
    ap.add_argument("--n-train", type=int, default=None)
    ap.add_argument("--n-val", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument(
        "--target-train-acc",
        type=float,
        default=None,
        help="--shuffle-labels only: stop once eval-mode accuracy on the shuffled training labels reaches this",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    defaults = SHUFFLED_DEFAULTS if args.shuffle_labels else DEFAULTS
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.shuffle_labels:
        return main_shuffled(args)

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
        opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch, pct_start=0.15
    )
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(args.seed)

    t_train = time.time()
    for epoch in range(args.epochs):
        # Random flips keep the label (all classes are flip-symmetric sets).
        loss, train_acc = train_epoch(model, opt, loss_fn, xtr, ytr, args.batch, gen, flip=True, sched=sched)
        acc = evaluate(model, xva, yva)
        print(
            f"epoch {epoch + 1}/{args.epochs}: loss {loss:.4f} "
            f"train acc {train_acc:.4f} val acc {acc:.4f} "
            f"({time.time() - t_train:.0f}s)"
        )
    print(f"training time: {time.time() - t_train:.0f}s")

    model.eval()
    export(model, args.out)
    verify(model, args.out, xva[:64].numpy())
    print(f"total time: {time.time() - t0:.0f}s")


def train_epoch(model, opt, loss_fn, xtr, ytr, batch, gen, flip, sched=None):
    """One pass over the training set in a random order; with ``flip``, each batch is mirrored
    with probability 1/2. Returns (mean loss, train-mode accuracy)."""
    model.train()
    n = len(xtr)
    perm = torch.randperm(n, generator=gen)
    total, correct, loss_sum = 0, 0, 0.0
    for i in range(0, n, batch):
        idx = perm[i : i + batch]
        xb, yb = xtr[idx], ytr[idx]
        if flip and torch.rand(1, generator=gen).item() < 0.5:
            xb = xb.flip(3)
        logits = model(xb)
        loss = loss_fn(logits, yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        loss_sum += loss.item() * len(idx)
        correct += (logits.argmax(1) == yb).sum().item()
        total += len(idx)
    return loss_sum / total, correct / total


def main_shuffled(args):
    """Data randomisation test model (Adebayo et al., 2018, "Sanity Checks for
    Saliency Maps"): same architecture and images, labels permuted by a fixed
    seed, trained to (near) memorisation of the training set."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.time()
    xtr, ytrue, _ = make_shapes(args.n_train, seed=args.seed)
    xva, yva, _ = make_shapes(args.n_val, seed=args.seed + 1000)
    yshuf = ytrue[np.random.default_rng(args.seed).permutation(args.n_train)]
    print(
        f"data: {args.n_train} train / {args.n_val} val in {time.time() - t0:.1f}s; "
        f"shuffled labels agree with true ones on {np.mean(yshuf == ytrue):.4f}"
    )
    xtr, ytr = torch.from_numpy(xtr), torch.from_numpy(yshuf)
    ytrue = torch.from_numpy(ytrue)
    xva, yva = torch.from_numpy(xva), torch.from_numpy(yva)

    model = ShapesCNN()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(args.seed)
    # SIGINT stops after the current epoch and still exports.  The learning
    # rate is constant, so stopping after epoch k gives the same model as
    # running with --epochs k.
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(True))
    t_train = time.time()
    for epoch in range(args.epochs):
        loss, train_acc = train_epoch(model, opt, loss_fn, xtr, ytr, args.batch, gen, flip=False)
        line = f"epoch {epoch + 1}/{args.epochs}: loss {loss:.4f} train acc (train mode) {train_acc:.4f}"
        done = epoch + 1 == args.epochs
        if (epoch + 1) % 5 == 0 or done or train_acc >= args.target_train_acc:
            fit = evaluate(model, xtr, ytr)
            line += f" shuffled train acc {fit:.4f}"
            done = done or fit >= args.target_train_acc
        print(f"{line} ({time.time() - t_train:.0f}s)", flush=True)
        if done or stop:
            print(f"stopped after epoch {epoch + 1}" + (" (SIGINT)" if stop else ""))
            break
    print(f"training time: {time.time() - t_train:.0f}s")
    print(f"accuracy on shuffled training labels: {evaluate(model, xtr, ytr):.4f}")
    print(f"accuracy on true training labels: {evaluate(model, xtr, ytrue):.4f}")
    print(f"held-out accuracy on true labels: {evaluate(model, xva, yva):.4f}")

    model.eval()
    export(model, args.out, shuffled=True)
    verify(model, args.out, xva[:64].numpy())
    print(f"total time: {time.time() - t0:.0f}s")


def export(model, path, shuffled=False):
    dummy = torch.zeros(1, 3, 64, 64)
    # TrainingMode.PRESERVE skips the eval-mode peephole pass that would fold
    # BatchNorm into Conv; the model is in eval mode, so BN exports as an
    # inference BatchNormalization node.
    torch.onnx.export(
        model,
        (dummy,),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}},
        training=torch.onnx.TrainingMode.PRESERVE,
        do_constant_folding=False,
    )
    m = onnx.load(str(path))
    m.producer_name = "onnxplain-demo"
    m.doc_string = (
        "Demo CNN for onnxplain: classifies the single target shape in "
        "a cluttered 64x64 RGB image. Input 'image' float32 [N,3,64,64] "
        "in [0,1]; output 'logits' [N,5] for classes " + ", ".join(CLASS_NAMES) + " (no softmax)."
    )
    if shuffled:
        m.doc_string += (
            " TRAINED ON RANDOMLY PERMUTED LABELS (data randomisation "
            "sanity check, Adebayo et al. 2018): its predictions are "
            "meaningless by design."
        )
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
