"""Faithfulness and localisation of eight methods on the two demo transformers (EVALUATION.md's tables).

    python models/demo/evaluate_transformers.py [--n 32] [--only vit|text]

* ``shapes_vit.onnx`` on ``make_shapes(n, seed=0)``: :func:`onnxplain.evaluate` with pixel flipping,
  region perturbation (MoRF and LeRF; the area between the curves, ABPC, is MoRF AOPC - LeRF AOPC),
  pointing game and relevance mass against the shape's mask. The class explained is the true label.
* ``keyword_bert.onnx`` on :func:`onnxplain.io.keywords_data.make_keywords` (n, seed=0): token maps
  (``token_scores``) scored by the helpers below: tokens 1..15 replaced by the pad id, most / least relevant
  first, AOPC of the explained logit over all 15 steps; ABPC; pointing game and relevance mass against the
  keyword's position.
  The [CLS] token is never replaced nor scored. ``gradient``'s token score is the L2 norm of the gradient over
  the embedding (the usual saliency for text; summing it with the embedding would be input x gradient).
  Grad-CAM on tokens: ReLU(sum_d w_d A_td), w_d = mean_t dY/dA_td, A the input of the last block.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE))

import onnxplain  # noqa: E402
from onnxplain.io.keywords_data import PAD, make_keywords  # noqa: E402
from onnxplain.io.shapes_data import make_shapes  # noqa: E402

METHODS = (
    "gradient",
    "input_x_gradient",
    "integrated_gradients",
    "attention_rollout",
    "chefer",
    "gradcam",
    "lrp_epsilon",
    "cp_lrp",
    "attnlrp",
)


def vit_table(n):
    ev = onnxplain.evaluate(
        str(HERE / "shapes_vit.onnx"),
        *make_shapes(n, seed=0),
        methods=list(METHODS),
        metrics=["pixel_flipping", "region_perturbation", "pointing_game", "relevance_mass"],
    )
    cols = {c.key: c for c in ev.columns()}
    keys = [k for k in cols if k in ev.values]
    rows = {}
    for m in METHODS:
        rows[m] = {k: ev.mean(k, m) for k in keys}
    return keys, rows


# ---- text -------------------------------------------------------------------------------------------------
def token_maps(ex, ids, method, tap=None):
    if method == "gradcam":
        inner = onnxplain.Explainer(str(HERE / "keyword_bert.onnx"), input=tap)
        res = inner.run(ids, "gradient")
        g, a = res.attribution, res.outputs["embedding"]
        w = g.mean(1, keepdims=True)
        return np.maximum((w * a).sum(-1), 0)
    opts = {"steps": 32} if method == "integrated_gradients" else {}
    res = ex.run(ids, method, **opts)
    if method == "gradient":
        return np.linalg.norm(res.attribution, axis=-1)
    return res.outputs["token_scores"]


def logits(sess, ids):
    return sess.run(None, {"ids": ids})[0]


def curve(sess, ids, scores, target, most_first=True):
    """Logit of ``target`` as tokens 1..15 are replaced by PAD one by one (k = 0..15)."""
    n, t = ids.shape
    order = np.argsort(-scores[:, 1:] if most_first else scores[:, 1:], axis=1, kind="stable") + 1
    out = np.empty((n, t))
    cur = ids.copy()
    out[:, 0] = logits(sess, cur)[np.arange(n), target]
    for k in range(t - 1):
        cur[np.arange(n), order[:, k]] = PAD
        out[:, k + 1] = logits(sess, cur)[np.arange(n), target]
    return out


def text_table(n):
    import onnx

    from onnxplain.runtime.session import make_session

    ids, labels, pos = make_keywords(n, seed=0)
    model = onnx.load(str(HERE / "keyword_bert.onnx"))
    sess = make_session(model)
    tap = next(
        node.output[0]
        for node in model.graph.node
        if node.op_type == "LayerNormalization" and "blocks.0/norm2" in node.name
    )  # block 1's input (post-norm: block 0's output)
    ex = onnxplain.Explainer(model)
    rows = {}
    for m in METHODS:
        s = token_maps(ex, ids, m, tap)
        morf = curve(sess, ids, s, labels, True)
        lerf = curve(sess, ids, s, labels, False)
        aopc_m = (morf[:, :1] - morf).mean(1)
        aopc_l = (lerf[:, :1] - lerf).mean(1)
        body = s[:, 1:]
        point = (body.argmax(1) + 1 == pos).astype(float)
        positive = np.maximum(body, 0)
        mass = positive[np.arange(n), pos - 1] / np.maximum(positive.sum(1), 1e-12)
        rows[m] = {
            "MoRF AOPC": aopc_m.mean(),
            "LeRF AOPC": aopc_l.mean(),
            "ABPC": (aopc_m - aopc_l).mean(),
            "point": point.mean(),
            "mass": mass.mean(),
        }
    return list(next(iter(rows.values()))), rows


def markdown(keys, rows):
    lines = ["| method | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for m, r in rows.items():
        lines.append(f"| {m} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--only", choices=("vit", "text"))
    args = ap.parse_args()
    if args.only in (None, "text"):
        t0 = time.time()
        print(f"## keyword_bert.onnx, {args.n} sequences\n")
        print(markdown(*text_table(args.n)))
        print(f"\n({time.time() - t0:.0f} s)\n")
    if args.only in (None, "vit"):
        t0 = time.time()
        keys, rows = vit_table(args.n)
        for r in rows.values():
            if "region_morf" in r and "region_lerf" in r:
                r["ABPC"] = r["region_morf"] - r["region_lerf"]
        keys = keys + (["ABPC"] if "ABPC" in next(iter(rows.values())) else [])
        print(f"## shapes_vit.onnx, {args.n} images\n")
        print(markdown(keys, rows))
        print(f"\n({time.time() - t0:.0f} s)\n")


if __name__ == "__main__":
    main()
