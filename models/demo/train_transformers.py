"""Train the two demo transformers and export them to ONNX (opset 17, torch.onnx.export, TorchScript).

Dev-only script (needs torch). Reproduce with:

    python models/demo/train_transformers.py            # both
    python models/demo/train_transformers.py --only vit
    python models/demo/train_transformers.py --only text

* ``shapes_vit.onnx``: a ViT on ``onnxplain.io.shapes_data.make_shapes`` (64x64, 5 classes): patch 8
  (an 8x8 grid of 64 patch tokens plus a class token), dim 64, 4 pre-norm blocks of 4 heads, MLP 128,
  GELU (erf), the class token read by the head. Input ``input`` float32 [batch, 3, 64, 64].
* ``keyword_bert.onnx``: a BERT-style encoder classifier on
  :func:`onnxplain.io.keywords_data.make_keywords`: ``ids`` int64
  [batch, 16], a [CLS] token then 15 tokens; exactly one of them is a keyword that decides the label
  (3 classes), the others are random filler tokens. Token + position embeddings, LayerNorm, 2 post-norm
  blocks of 2 heads, dim 32, MLP 64, the [CLS] token read by the head. Ground truth: the keyword's position.

Attention is written out (MatMul, Softmax over the last axis of [N, heads, T, T], MatMul), as most
exporters write it. Held-out accuracy and sha256 are printed for MODEL_CARD.md.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from onnxplain.io.keywords_data import KEYWORDS, SEQ, VOCAB, make_keywords  # noqa: E402
from onnxplain.io.shapes_data import CLASS_NAMES, make_shapes  # noqa: E402


# ---- modules ----------------------------------------------------------------------------------------------
class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        n, c = x.shape[1], x.shape[2]
        qkv = self.qkv(x).reshape(-1, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * self.scale, dim=-1)
        return self.proj(torch.matmul(a, v).transpose(1, 2).reshape(-1, n, c))


class Block(nn.Module):
    def __init__(self, dim, heads, mlp, pre_norm=True):
        super().__init__()
        self.pre_norm = pre_norm
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x):
        if self.pre_norm:  # ViT
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        x = self.norm1(x + self.attn(x))  # BERT
        return self.norm2(x + self.mlp(x))


N_SHAPES, N_KEYWORDS = len(CLASS_NAMES), len(KEYWORDS)


class ShapesViT(nn.Module):
    def __init__(self, image=64, patch=8, dim=64, depth=4, heads=4, mlp=128, classes=N_SHAPES):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(0.02 * torch.randn(1, 1, dim))
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, (image // patch) ** 2 + 1, dim))
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


class KeywordBERT(nn.Module):
    def __init__(self, vocab=VOCAB, seq=SEQ, dim=32, depth=2, heads=2, mlp=64, classes=N_KEYWORDS):
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(0.02 * torch.randn(1, seq, dim))
        self.norm = nn.LayerNorm(dim)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp, pre_norm=False) for _ in range(depth)])
        self.head = nn.Linear(dim, classes)

    def forward(self, ids):
        x = self.norm(self.tok(ids) + self.pos)
        return self.head(self.blocks(x)[:, 0])


# ---- training ---------------------------------------------------------------------------------------
def fit(model, x, y, epochs, batch, lr, seed, augment=None):
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(x) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    loss_fn = nn.CrossEntropyLoss()
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        total, hits = 0.0, 0
        for i in range(0, len(x), batch):
            idx = perm[i : i + batch]
            xb, yb = xt[idx], yt[idx]
            if augment is not None:
                xb = augment(xb, gen)
            out = model(xb)
            loss = loss_fn(out, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            hits += (out.argmax(1) == yb).sum().item()
        print(f"  epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f} train acc {hits / len(x):.4f}", flush=True)


def flip(xb, gen):
    m = torch.rand(len(xb), generator=gen) < 0.5
    xb = xb.clone()
    xb[m] = xb[m].flip(-1)
    return xb


def export(model, example, path: Path, input_name: str):
    model.eval()
    buf = io.BytesIO()
    torch.onnx.export(
        model,
        (example,),
        buf,
        dynamo=False,
        opset_version=17,
        input_names=[input_name],
        output_names=["logits"],
        dynamic_axes={input_name: {0: "batch"}, "logits": {0: "batch"}},
    )
    m = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, path)
    return path


def onnx_accuracy(path, x, y):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    preds = np.concatenate([sess.run(None, {name: x[i : i + 256]})[0].argmax(1) for i in range(0, len(x), 256)])
    return float((preds == y).mean())


def report(path, acc, n):
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    print(f"{path.name}: {path.stat().st_size} bytes, held-out accuracy {acc:.4f} on {n}, sha256 {digest}")


def train_vit(args):
    torch.manual_seed(args.seed)
    x, y, _ = make_shapes(args.vit_train, seed=args.seed)
    xv, yv, _ = make_shapes(2000, seed=args.seed + 1000)
    model = ShapesViT()
    t0 = time.time()
    fit(model, x, y, args.vit_epochs, 128, 2e-3, args.seed, augment=flip)
    print(f"  trained in {time.time() - t0:.0f} s")
    path = export(model, torch.as_tensor(xv[:2]), HERE / "shapes_vit.onnx", "input")
    report(path, onnx_accuracy(path, xv, yv), len(xv))


def train_text(args):
    torch.manual_seed(args.seed)
    x, y, _ = make_keywords(args.text_train, seed=args.seed)
    xv, yv, _ = make_keywords(2000, seed=args.seed + 1000)
    model = KeywordBERT()
    t0 = time.time()
    fit(model, x, y, args.text_epochs, 128, 3e-3, args.seed)
    print(f"  trained in {time.time() - t0:.0f} s")
    path = export(model, torch.as_tensor(xv[:2]), HERE / "keyword_bert.onnx", "ids")
    report(path, onnx_accuracy(path, xv, yv), len(xv))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("vit", "text"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vit-train", type=int, default=16000)
    ap.add_argument("--vit-epochs", type=int, default=40)
    ap.add_argument("--text-train", type=int, default=8000)
    ap.add_argument("--text-epochs", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.only in (None, "text"):
        train_text(args)
    if args.only in (None, "vit"):
        train_vit(args)


if __name__ == "__main__":
    main()
