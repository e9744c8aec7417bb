"""Hand-written ONNX graphs for the test zoo (no torch needed).

The graphs are written in ONNX text syntax (onnx.parser) and get random weights
from numpy with a fixed seed.  They cover ops the torch exports miss: Gemm with
transA/transB/alpha/beta, broadcasting MatMul, Einsum, Pad, Split, strided
Slice, Gather, Where, Tile, Expand, reductions, Cast, unary math, ...
The same ops are used at three opsets (11, 13, newest) where their signatures
differ (axes/split/pads as attributes or as inputs).

    python models/zoo/handwritten.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnx.parser
from onnx import helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ZOO_DIR, save_checked, update_manifest  # noqa: E402

NEWEST = onnx.defs.onnx_opset_version()
RNG = np.random.default_rng(1234)
ORT_FALLBACK_OPSET = 25


def dense(*shape, fan_in=None):
    fan_in = fan_in or shape[-1]
    return (RNG.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)


# ---------------------------------------------------------------------------
# opset 11: tabular MLP-like graph, axes/split given as attributes

TABULAR_11 = """
<ir_version: 6, opset_import: ["" : 11]>
hw_tabular (float[N,6] x) => (float[N,3] log_probs) {
    one = Constant <value = float {1.0}> ()
    expo = Constant <value = float {-0.75}> ()
    xt = Transpose <perm = [1, 0]> (x)
    h1 = Gemm <transA = 1, transB = 1, alpha = 0.7, beta = 1.3> (xt, w1, b1)
    h2 = Gemm <alpha = 1.1, beta = 0.5> (h1, w2, b2)
    sq = Mul (h2, h2)
    pos = Add (sq, one)
    r = Sqrt (pos)
    d = Div (h2, r)
    p = Pow (pos, expo)
    ng = Neg (sq)
    e = Exp (ng)
    l = Log (pos)
    a = Abs (h2)
    er = Erf (h2)
    se = Selu <alpha = 1.6, gamma = 1.05> (h2)
    hs = HardSigmoid <alpha = 0.2, beta = 0.5> (h2)
    w = Where (cond, er, se)
    t1 = Add (w, hs)
    t2 = Sub (t1, l)
    feat = Concat <axis = 1> (d, e, p, t2, a)
    s1, s2 = Split <axis = 1, split = [8, 12]> (feat)
    sl = Slice (s2, sl_starts, sl_ends, sl_axes, sl_steps)
    idx = Constant <value = int64[6] {0, 3, 3, 7, 2, 5}> ()
    g = Gather <axis = 1> (s1, idx)
    m1 = Mul (sl, g)
    reps = Constant <value = int64[2] {1, 2}> ()
    tl = Tile (d, reps)
    u = Unsqueeze <axes = [1]> (d)
    shp = Constant <value = int64[3] {1, 3, 4}> ()
    ex = Expand (u, shp)
    exs = Mul (ex, scale3)
    rm = ReduceMean <axes = [1], keepdims = 0> (exs)
    rs = ReduceSum <axes = [1], keepdims = 1> (tl)
    rx = ReduceMax <axes = [2], keepdims = 1> (exs)
    rxs = Squeeze <axes = [2]> (rx)
    st3 = Slice (s1, st_starts, st_ends, sl_axes, st_steps)
    z = Concat <axis = 1> (m1, rm, rs, rxs, st3, tl)
    zd = Cast <to = 11> (z)
    zf = Cast <to = 1> (zd)
    zi = Identity (zf)
    logits = Gemm <transB = 1> (zi, w3, b3)
    log_probs = LogSoftmax <axis = 1> (logits)
}
"""


def tabular_weights():
    return {
        "w1": dense(5, 6),
        "b1": dense(5, fan_in=1) * 0.3,
        "w2": dense(5, 4, fan_in=5),
        "b2": dense(1, 4, fan_in=1) * 0.3,
        "cond": np.array([[True, False, True, False]]),
        "scale3": np.array([[0.5], [-1.0], [1.5]], dtype=np.float32),
        "sl_starts": np.array([11], dtype=np.int64),
        "sl_ends": np.array([-100], dtype=np.int64),
        "sl_axes": np.array([1], dtype=np.int64),
        "sl_steps": np.array([-2], dtype=np.int64),
        "st_starts": np.array([0], dtype=np.int64),
        "st_ends": np.array([8], dtype=np.int64),
        "st_steps": np.array([3], dtype=np.int64),
        "w3": dense(3, 25),
        "b3": dense(3, fan_in=1) * 0.3,
    }


# ---------------------------------------------------------------------------
# opset 13: tensor graph, axes/split as inputs (except ReduceMean/Max)

TENSOR_13 = """
<ir_version: 7, opset_import: ["" : 13]>
hw_tensor (float[N,1,4,5] x) => (float[N,10] log_probs) {
    mm = MatMul (x, wm)
    pads = Constant <value = int64[8] {0, 0, 1, 1, 0, 0, 1, 2}> ()
    cval = Constant <value = float {0.25}> ()
    half = Constant <value = float {0.5}> ()
    pc = Pad <mode = "constant"> (mm, pads, cval)
    pr = Pad <mode = "reflect"> (mm, pads)
    prh = Mul (pr, half)
    pp = Add (pc, prh)
    gm = GlobalMaxPool (pp)
    ax23 = Constant <value = int64[2] {2, 3}> ()
    gms = Squeeze (gm, ax23)
    axm1 = Constant <value = int64[1] {-1}> ()
    rs = ReduceSum <keepdims = 0> (pp, axm1)
    ein = Einsum <equation = "bij,jk->bik"> (rs, wk)
    splits = Constant <value = int64[2] {1, 3}> ()
    sp1, sp2 = Split <axis = 2> (ein, splits)
    ax2 = Constant <value = int64[1] {2}> ()
    u = Unsqueeze (gms, ax2)
    prod = Mul (sp1, u)
    cat = Concat <axis = 2> (prod, sp2, u)
    two = Constant <value = float {2.0}> ()
    tenth = Constant <value = float {0.1}> ()
    c2 = Pow (cat, two)
    c2s = Mul (c2, tenth)
    cat2 = Add (cat, c2s)
    rmean = ReduceMean <axes = [1], keepdims = 0> (cat2)
    rmax = ReduceMax <axes = [1], keepdims = 0> (cat2)
    f = Concat <axis = 1> (rmean, rmax)
    fd = Cast <to = 11> (f)
    ff = Cast <to = 1> (fd)
    log_probs = LogSoftmax <axis = -1> (ff)
}
"""


def tensor_weights():
    return {"wm": dense(3, 5, 6, fan_in=5), "wk": dense(6, 4, fan_in=6 * 9)}


# ---------------------------------------------------------------------------
# newest opset: sequence-like graph, reduction axes/pad axes/num_outputs as inputs

MIXED_NEW = f"""
<ir_version: {helper.find_min_ir_version_for([helper.make_opsetid("", NEWEST)])},
 opset_import: ["" : {NEWEST}]>
hw_mixed (float[N,4,6] x) => (float[N,5] log_probs) {{
    eps = Constant <value = float {{0.5}}> ()
    pw_e = Constant <value = float {{0.3}}> ()
    xs = Mul (x, x)
    pos = Add (xs, eps)
    sq = Sqrt (pos)
    lg = Log (pos)
    nxs = Neg (xs)
    ex = Exp (nxs)
    pw = Pow (pos, pw_e)
    ab = Abs (x)
    er = Erf (x)
    se = Selu (x)
    hsg = HardSigmoid <alpha = 0.25, beta = 0.4> (x)
    wh = Where (cond, er, se)
    dif = Sub (wh, hsg)
    rat = Div (x, sq)
    stacked = Concat <axis = 1> (sq, lg, ex, pw, ab, dif, rat)
    pads_r = Constant <value = int64[2] {{1, 2}}> ()
    pads_c = Constant <value = int64[2] {{0, 3}}> ()
    pax = Constant <value = int64[1] {{-1}}> ()
    cval = Constant <value = float {{0.1}}> ()
    pad_r = Pad <mode = "reflect"> (stacked, pads_r, , pax)
    pad_c = Pad <mode = "constant"> (stacked, pads_c, cval, pax)
    mix = Add (pad_r, pad_c)
    ax1 = Constant <value = int64[1] {{1}}> ()
    ax2 = Constant <value = int64[1] {{2}}> ()
    mix4 = Unsqueeze (mix, ax2)
    gmp = GlobalMaxPool (mix4)
    a, b = Split <axis = 1, num_outputs = 2> (mix)
    rmx = ReduceMax <keepdims = 0> (a, ax2)
    rmn = ReduceMean <keepdims = 1> (b, ax1)
    rsm = ReduceSum <keepdims = 0> (b, ax2)
    ein = Einsum <equation = "bij,jk->bik"> (mix, wk)
    sl = Slice (ein, sl_starts, sl_ends, ax1, sl_steps)
    gidx = Constant <value = int64[4] {{4, 0, 2, 2}}> ()
    gt = Gather <axis = 2> (sl, gidx)
    reps = Constant <value = int64[3] {{1, 2, 1}}> ()
    tl = Tile (rmn, reps)
    u = Unsqueeze (rmx, ax1)
    eshape = Constant <value = int64[3] {{1, 3, 1}}> ()
    exd = Expand (u, eshape)
    flat = Constant <value = int64[2] {{0, -1}}> ()
    gtf = Reshape (gt, flat)
    tlf = Reshape (tl, flat)
    exf = Reshape (exd, flat)
    ax23 = Constant <value = int64[2] {{2, 3}}> ()
    gms = Squeeze (gmp, ax23)
    feat = Concat <axis = 1> (gtf, tlf, exf, gms, rsm)
    fd = Cast <to = 11> (feat)
    ff = Cast <to = 1> (fd)
    fi = Identity (ff)
    logits = Gemm <transB = 1, alpha = 0.5, beta = 2.0> (fi, w, bias)
    log_probs = LogSoftmax <axis = 1> (logits)
}}
"""


def mixed_weights():
    cond = RNG.random((4, 6)) < 0.5
    return {
        "cond": cond,
        "wk": dense(9, 5, fan_in=9),
        "sl_starts": np.array([-1], dtype=np.int64),
        "sl_ends": np.array([-100], dtype=np.int64),
        "sl_steps": np.array([-3], dtype=np.int64),
        "w": dense(5, 142),
        "bias": dense(1, 5, fan_in=1) * 0.3,
    }


# ---------------------------------------------------------------------------

MODELS = [
    # (file, text, weights, input shape, dynamic, note)
    (
        "hw_tabular_op11.onnx",
        TABULAR_11,
        tabular_weights,
        [2, 6],
        True,
        "log-probabilities [N,3] (LogSoftmax of Gemm logits)",
    ),
    ("hw_tensor_op13.onnx", TENSOR_13, tensor_weights, [2, 1, 4, 5], True, "log-probabilities [N,10] (LogSoftmax)"),
    (
        f"hw_mixed_op{NEWEST}.onnx",
        MIXED_NEW,
        mixed_weights,
        [2, 4, 6],
        True,
        "log-probabilities [N,5] (LogSoftmax of Gemm logits)",
    ),
]


def build(text: str, weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    model = onnx.parser.parse_model(text)
    for name, value in weights.items():
        model.graph.initializer.append(numpy_helper.from_array(value, name))
    model.producer_name = "onnxplain-zoo/handwritten"
    return model


def verify(model: onnx.ModelProto, shape) -> str:
    """Compare ReferenceEvaluator and onnxruntime (when it knows the opset)."""
    from onnx.reference import ReferenceEvaluator

    x = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
    ref = ReferenceEvaluator(model).run(None, {"x": x})[0]
    assert np.all(np.isfinite(ref))
    import onnxruntime as ort

    note = ""
    try:
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception:
        # onnxruntime may not know the newest opset yet; none of the ops used here
        # changed after opset 18, so compare a copy stamped with opset 25 / IR 10.
        older = onnx.ModelProto()
        older.CopyFrom(model)
        older.opset_import[0].version = ORT_FALLBACK_OPSET
        older.ir_version = 10
        sess = ort.InferenceSession(older.SerializeToString(), providers=["CPUExecutionProvider"])
        note = f" (onnxruntime run with opset stamped {ORT_FALLBACK_OPSET})"
    got = sess.run(None, {"x": x})[0]
    err = float(np.max(np.abs(got - ref)))
    assert np.allclose(got, ref, atol=1e-4), err
    return f"max|ort-ref|={err:.2e}{note}"


def main() -> None:
    entries = []
    for fname, text, weights, shape, dynamic, note in MODELS:
        model = build(text, weights())
        path = save_checked(model, fname)
        print(f"{fname:28s} {path.stat().st_size:8d} B  {verify(model, shape)}")
        entries.append(
            {
                "file": fname,
                "family": "handwritten",
                "source": "handwritten",
                "opset": model.opset_import[0].version,
                "input": model.graph.input[0].name,
                "input_shape": shape,
                "dynamic_batch": dynamic,
                "output": model.graph.output[0].name,
                "logits_note": note,
            }
        )
    # drop stale files from an older newest-opset run
    keep = {e["file"] for e in entries}
    for old in ZOO_DIR.glob("hw_*.onnx"):
        if old.name not in keep:
            old.unlink()
    update_manifest(entries, {"handwritten"})


if __name__ == "__main__":
    main()
