"""Train the demo detector and segmenter on onnxplain.io.shapes_data.make_scenes and export them to ONNX.

Dev-only script (needs torch).  Reproduce with:

    python models/demo/train_detect_segment.py --n-train 2000   # both, about 10 minutes on 2 cores
    python models/demo/train_detect_segment.py --only detect

Writes models/demo/shapes_det.onnx and models/demo/shapes_seg.onnx and prints held-out
mAP@0.5 (detector) and mean IoU / pixel accuracy (segmenter) on scenes of another seed.

Detector: a YOLOv8-like single-stage grid head without NMS.  Backbone 3 x (Conv3x3-BN-ReLU-MaxPool)
to an 8 x 8 grid (stride 8), two more Conv3x3-BN-ReLU, a 1x1 head with 4 + C channels per cell.
Decoded in the graph: cx = (sigmoid(t0) + gx) * 8, cy likewise, w = 16 exp(t2), h = 16 exp(t3)
(pixels); class scores sigmoid(t).  Output ``detections`` [N, 4 + C, 64]: per anchor (grid
cell, row-major) cx, cy, w, h then the C class scores (onnxplain's ``yolov8`` layout).
Training: the cell holding an object's centre is its positive; BCE on the class scores of every
cell, L1 on (cx, cy, w, h) / 64 for the positives.

Segmenter: a small encoder-decoder (64 -> 16 -> 64 with a full-resolution skip), output
``logits`` [N, 1 + C, 64, 64]: channel 0 background, channel 1 + k class k; cross-entropy.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn
from torch.nn import functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from onnxplain.io.shapes_data import CLASS_NAMES, make_scenes  # noqa: E402

C = len(CLASS_NAMES)
STRIDE, GRID = 8, 8


def cbr(cin, cout):
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class Detector(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            *cbr(3, 16),
            nn.MaxPool2d(2),
            *cbr(16, 32),
            nn.MaxPool2d(2),
            *cbr(32, 48),
            nn.MaxPool2d(2),
            *cbr(48, 64),
            *cbr(64, 64),
        )
        self.head = nn.Conv2d(64, 4 + C, 1)
        with torch.no_grad():
            self.head.bias[4:] = -4.0  # a low prior for every class score (RetinaNet's initialisation)
        gy, gx = torch.meshgrid(torch.arange(GRID), torch.arange(GRID), indexing="ij")
        self.register_buffer("gx", gx.reshape(1, 1, -1).float())
        self.register_buffer("gy", gy.reshape(1, 1, -1).float())

    def raw(self, x):
        return self.head(self.features(x)).flatten(2)  # [N, 4 + C, 64]

    def forward(self, x):
        t = self.raw(x)
        cx = (torch.sigmoid(t[:, 0:1]) + self.gx) * STRIDE
        cy = (torch.sigmoid(t[:, 1:2]) + self.gy) * STRIDE
        wh = 16.0 * torch.exp(t[:, 2:4].clamp(max=3.0))
        return torch.cat([cx, cy, wh, torch.sigmoid(t[:, 4:])], dim=1)


class Segmenter(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(*cbr(3, 16))
        self.down = nn.Sequential(nn.MaxPool2d(2), *cbr(16, 32), nn.MaxPool2d(2), *cbr(32, 48), *cbr(48, 48))
        self.up = nn.Sequential(*cbr(48, 24), nn.Upsample(scale_factor=4, mode="bilinear", align_corners=False))
        self.out = nn.Sequential(*cbr(24 + 16, 16), nn.Conv2d(16, 1 + C, 1))

    def forward(self, x):
        s = self.stem(x)
        return self.out(torch.cat([self.up(self.down(s)), s], dim=1))


# ---- targets and losses ---------------------------------------------------------------------------
def det_targets(labels, boxes):
    n = len(labels)
    cls = np.zeros((n, C, GRID * GRID), np.float32)
    box = np.zeros((n, 4, GRID * GRID), np.float32)
    pos = np.zeros((n, GRID * GRID), bool)
    for i in range(n):
        for lab, b in zip(labels[i], boxes[i]):
            if lab < 0:
                continue
            cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
            a = int(min(cy // STRIDE, GRID - 1)) * GRID + int(min(cx // STRIDE, GRID - 1))
            cls[i, lab, a] = 1
            box[i, :, a] = (cx, cy, b[2] - b[0], b[3] - b[1])
            pos[i, a] = True
    return torch.from_numpy(cls), torch.from_numpy(box), torch.from_numpy(pos)


def det_loss(model, x, cls, box, pos):
    y = model(x)
    raw = model.raw(x)
    lc = F.binary_cross_entropy_with_logits(raw[:, 4:], cls, reduction="sum") / max(1, int(pos.sum()))
    p = pos[:, None].expand_as(box)
    lb = (y[:, :4][p] - box[p]).abs().sum() / 64.0 / max(1, int(pos.sum()))
    return lc + 5 * lb


def seg_targets(labels, masks):
    t = np.zeros(masks.shape[:1] + masks.shape[2:], np.int64)
    for i in range(len(labels)):
        for lab, m in zip(labels[i], masks[i]):
            if lab >= 0:
                t[i][m] = lab + 1
    return torch.from_numpy(t)


# ---- evaluation ------------------------------------------------------------------------------------
def xyxy(d):
    """[A, 4 + C] rows (cx, cy, w, h, scores) -> boxes [A, 4] xyxy."""
    return np.stack([d[:, 0] - d[:, 2] / 2, d[:, 1] - d[:, 3] / 2, d[:, 0] + d[:, 2] / 2, d[:, 1] + d[:, 3] / 2], 1)


def iou(a, b):
    lt, rb = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda z: np.prod(z[:, 2:] - z[:, :2], axis=1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter + 1e-9)


def mean_ap(out, labels, boxes, thr=0.5):
    """VOC-style all-point mAP@thr over classes (a detection per anchor and class, greedy matching)."""
    aps = []
    for c in range(C):
        dets, npos = [], 0
        for i in range(len(out)):
            d = out[i].T  # [A, 4 + C]
            keep = d[:, 4 + c] > 0.01
            gt = boxes[i][labels[i] == c]
            npos += len(gt)
            b, s = xyxy(d[keep]), d[keep, 4 + c]
            order = np.argsort(-s)
            b, s = b[order], s[order]
            sel = []  # NMS at 0.5 per class
            for j in range(len(b)):
                if all(iou(b[j : j + 1], b[k : k + 1])[0, 0] < 0.5 for k in sel):
                    sel.append(j)
            used = np.zeros(len(gt), bool)
            for j in sel:
                ok = False
                if len(gt):
                    ov = iou(b[j : j + 1], gt)[0]
                    k = int(ov.argmax())
                    if ov[k] >= thr and not used[k]:
                        used[k], ok = True, True
                dets.append((s[j], ok))
        dets.sort(key=lambda t: -t[0])
        tp = np.cumsum([d[1] for d in dets])
        fp = np.cumsum([not d[1] for d in dets])
        rec, prec = tp / max(npos, 1), tp / np.maximum(tp + fp, 1)
        mrec, mpre = np.concatenate([[0], rec, [1]]), np.concatenate([[0], prec, [0]])
        for k in range(len(mpre) - 2, -1, -1):
            mpre[k] = max(mpre[k], mpre[k + 1])
        idx = np.flatnonzero(mrec[1:] != mrec[:-1])
        aps.append(float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1])))
    return float(np.mean(aps)), aps


def seg_scores(logits, truth):
    pred = logits.argmax(1)
    ious = []
    for k in range(1 + C):
        inter, union = np.sum((pred == k) & (truth == k)), np.sum((pred == k) | (truth == k))
        if union:
            ious.append(inter / union)
    return float(np.mean(ious)), float((pred == truth).mean())


# ---- training --------------------------------------------------------------------------------------
def train(model, batches, loss_fn, seconds, epochs, lr=3e-3):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * len(batches)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    t0, k = time.time(), 0
    for ep in range(epochs):
        model.train()
        tot = 0.0
        for b in np.random.default_rng(ep).permutation(len(batches)):
            loss = loss_fn(model, *batches[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach())
            k += 1
        print(f"epoch {ep + 1}/{epochs} loss {tot / len(batches):.4f} ({time.time() - t0:.0f} s)", flush=True)
        if time.time() - t0 > seconds:
            print("time budget reached", flush=True)
            break
    model.eval()
    return model


def fix_output_shape(path, dims):
    """Declare the output's shape (the exporter leaves Concat-made dimensions symbolic): ['N', *dims]."""
    m = onnx.load(str(path))
    shape = m.graph.output[0].type.tensor_type.shape
    for d, v in zip(shape.dim[1:], dims):
        d.ClearField("dim_param")
        d.dim_value = v
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(path))


def export(model, path, output, doc):
    torch.onnx.export(
        model,
        (torch.zeros(1, 3, 64, 64),),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["image"],
        output_names=[output],
        dynamic_axes={"image": {0: "N"}, output: {0: "N"}},
        do_constant_folding=True,
    )
    m = onnx.load(str(path))
    m.producer_name = "onnxplain-demo"
    m.doc_string = doc
    onnx.save(m, str(path))
    print(f"saved {path}")


def batchify(x, *ys, bs=64):
    return [(torch.from_numpy(x[i : i + bs]), *(y[i : i + bs] for y in ys)) for i in range(0, len(x), bs)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=("detect", "segment"))
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--n-test", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=400)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x, labels, boxes, masks = make_scenes(args.n_train, seed=1)
    xt, lt, bt, mt = make_scenes(args.n_test, seed=99)
    if args.only in (None, "detect"):
        cls, box, pos = det_targets(labels, boxes)
        model = train(Detector(), batchify(x, cls, box, pos), det_loss, args.seconds, args.epochs)
        path = HERE / "shapes_det.onnx"
        export(
            model,
            path,
            "detections",
            "Demo detector for onnxplain (YOLOv8-like grid head, no NMS): input 'image' float32 "
            "[N,3,64,64] in [0,1]; output 'detections' [N, 4+5, 64]: per anchor (8x8 grid cell, row-major) "
            "cx, cy, w, h in pixels then the sigmoid scores of " + ", ".join(CLASS_NAMES) + ".",
        )
        fix_output_shape(path, (4 + C, GRID * GRID))
        out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": xt})[0]
        with torch.no_grad():
            assert np.allclose(out, model(torch.from_numpy(xt)).numpy(), atol=1e-4)
        print(f"sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}")
        m, aps = mean_ap(out, lt, bt)
        print(f"detector held-out mAP@0.5 {m:.3f} per class " + ", ".join(f"{a:.3f}" for a in aps))
    if args.only in (None, "segment"):
        model = train(
            Segmenter(),
            batchify(x, seg_targets(labels, masks)),
            lambda mod, xb, yb: F.cross_entropy(mod(xb), yb),
            args.seconds,
            args.epochs,
        )
        path = HERE / "shapes_seg.onnx"
        export(
            model,
            path,
            "logits",
            "Demo segmenter for onnxplain: input 'image' float32 [N,3,64,64] in [0,1]; output 'logits' "
            "[N, 6, 64, 64]: background, " + ", ".join(CLASS_NAMES) + " (no softmax).",
        )
        fix_output_shape(path, (1 + C, 64, 64))
        out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": xt})[0]
        print(f"sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}")
        miou, acc = seg_scores(out, seg_targets(lt, mt).numpy())
        print(f"segmenter held-out mean IoU {miou:.3f} pixel accuracy {acc:.3f}")


if __name__ == "__main__":
    main()
