"""Small control-flow models (If, Loop, Scan) for tests/test_control_flow.py (no torch needed).

Written in ONNX text syntax (onnx.parser) with random weights from numpy (fixed seed). Not in
manifest.json: the whole-model zoo test explains the first float input at one probe point, while
these models need probes chosen per branch; tests/test_control_flow.py holds their tests.

    python models/zoo/control_flow.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnx.parser
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save_checked  # noqa: E402

RNG = np.random.default_rng(2024)
HEADER = '<ir_version: 8, opset_import: ["" : 17]>'


def dense(*shape):
    return (RNG.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)


# the condition depends on x; each branch reads outer tensors (x, h) by name
IF_CAPTURE = """
if_capture (float[2,3] x) => (float[2,3] y) {
    m = ReduceMean <keepdims = 0> (x)
    zero = Constant <value = float {0.0}> ()
    c = Greater (m, zero)
    xw = MatMul (x, W)
    h = Tanh (xw)
    y = If (c) <
        then_branch = then_g () => (float[2,3] yt) { yt = Mul (x, h) },
        else_branch = else_g () => (float[2,3] ye) {
            half = Constant <value = float {0.5}> ()
            s = Sin (h)
            xs = Mul (x, half)
            ye = Add (s, xs)
        }>
}
"""

# an If mid-graph: two outputs, one also a graph output, both feeding later nodes that read h again
IF_MIDGRAPH = """
if_midgraph (float[2,4] x) => (float[2,3] y, float[2,5] a) {
    xw = MatMul (x, W1)
    hb = Add (xw, b1)
    h = Relu (hb)
    xs = ReduceSum <keepdims = 0> (x)
    thr = Constant <value = float {0.0}> ()
    c = Greater (xs, thr)
    a, s = If (c) <
        then_branch = then_g () => (float[2,5] at, float[2,5] st) {
            at = Tanh (h)
            xp = MatMul (x, W3)
            st = Mul (h, xp)
        },
        else_branch = else_g () => (float[2,5] ae, float[2,5] se) {
            ae = Sigmoid (h)
            se = Identity (h)
        }>
    sh = Mul (s, h)
    z = Add (a, sh)
    y = MatMul (z, W2)
}
"""

# the then-branch holds a second If whose branches read a then-branch tensor (p) and outer ones
IF_NESTED = """
if_nested (float[2,3] x) => (float[2,3] y) {
    m = ReduceMean <keepdims = 0> (x)
    zero = Constant <value = float {0.0}> ()
    c1 = Greater (m, zero)
    mx = ReduceMax <keepdims = 0> (x)
    one = Constant <value = float {1.0}> ()
    c2 = Greater (mx, one)
    xw = MatMul (x, W)
    h = Tanh (xw)
    y = If (c1) <
        then_branch = then_g () => (float[2,3] yt) {
            p = Mul (h, x)
            yt = If (c2) <
                then_branch = then_in () => (float[2,3] y2) { y2 = Sin (p) },
                else_branch = else_in () => (float[2,3] y3) { y3 = Mul (p, h) }>
        },
        else_branch = else_g () => (float[2,3] ye) {
            co = Cos (h)
            ye = Add (co, x)
        }>
}
"""

# one condition is an initializer, the other folds from the static shape of x
IF_CONST = """
if_const (float[2,3] x) => (float[2,3] y) {
    sh = Shape (x)
    i0 = Constant <value = int64 {0}> ()
    n0 = Gather (sh, i0)
    two = Constant <value = int64 {2}> ()
    c2 = Equal (n0, two)
    h = Tanh (x)
    a = If (flag) <
        then_branch = then_a () => (float[2,3] a1) { a1 = Mul (h, x) },
        else_branch = else_a () => (float[2,3] a2) { a2 = Sin (x) }>
    y = If (c2) <
        then_branch = then_y () => (float[2,3] y1) { y1 = Add (a, h) },
        else_branch = else_y () => (float[2,3] y2) { y2 = Neg (a) }>
}
"""

# a Loop whose trip count (3) folds from the static shape of x; loop-carried v and a scan output
LOOP_STATIC = """
loop_static (float[3,4] x) => (float[3,4] y) {
    sh = Shape (x)
    i0 = Constant <value = int64 {0}> ()
    M = Gather (sh, i0)
    cond = Constant <value = bool {1}> ()
    v0 = Tanh (x)
    vf, scan = Loop (M, cond, v0) <
        body = body_g (int64 i, bool cin, float[3,4] v) => (bool cout, float[3,4] vn, float[3,4] so) {
            cout = Identity (cin)
            vw = MatMul (v, W)
            vx = Add (vw, x)
            vn = Tanh (vx)
            fi = Cast <to = 1> (i)
            so = Mul (vn, fi)
        }>
    ax0 = Constant <value = int64[1] {0}> ()
    ss = ReduceSum <keepdims = 0> (scan, ax0)
    y = Add (vf, ss)
}
"""

# a recurrent Scan over axis 1 of x, run backwards in time, stacking its outputs on axis 1
LOOP_SCAN = """
loop_scan (float[2,4,3] x) => (float[2,5] y) {
    xm = ReduceMean <axes = [1], keepdims = 0> (x)
    hw = MatMul (xm, Wh0)
    h0 = Tanh (hw)
    hf, ys = Scan (h0, x) <num_scan_inputs = 1, scan_input_axes = [1], scan_input_directions = [1],
                           scan_output_axes = [1],
        body = body_g (float[2,5] hs, float[2,3] xt) => (float[2,5] hn, float[2,5] yt) {
            a = MatMul (xt, Wx)
            b = MatMul (hs, Wh)
            s = Add (a, b)
            hn = Tanh (s)
            yt = Sin (hn)
        }>
    ax1 = Constant <value = int64[1] {1}> ()
    r = ReduceSum <keepdims = 0> (ys, ax1)
    y = Add (r, hf)
}
"""

# the trip count is a second input: only known at run time
LOOP_DYNAMIC = """
loop_dynamic (float[2,3] x, int64 steps) => (float[2,3] y) {
    cond = Constant <value = bool {1}> ()
    y = Loop (steps, cond, x) <
        body = body_g (int64 i, bool cin, float[2,3] v) => (bool cout, float[2,3] vn) {
            cout = Identity (cin)
            vw = MatMul (v, W)
            vn = Tanh (vw)
        }>
}
"""

# the else-branch ignores x: where it is taken, y does not depend on x at all
IF_IGNORES_X = """
if_ignores_x (float[2,3] x) => (float[2,3] y) {
    m = ReduceMean <keepdims = 0> (x)
    zero = Constant <value = float {0.0}> ()
    c = Greater (m, zero)
    y = If (c) <
        then_branch = then_g () => (float[2,3] yt) { yt = Mul (x, W) },
        else_branch = else_g () => (float[2,3] ye) { ye = Sin (W) }>
}
"""

MODELS = [
    ("if_capture.onnx", IF_CAPTURE, lambda: {"W": dense(3, 3)}),
    (
        "if_midgraph.onnx",
        IF_MIDGRAPH,
        lambda: {"W1": dense(4, 5), "b1": dense(5) + 0.5, "W3": dense(4, 5), "W2": dense(5, 3)},
    ),
    ("if_nested.onnx", IF_NESTED, lambda: {"W": dense(3, 3)}),
    ("if_const.onnx", IF_CONST, lambda: {"flag": np.array(True)}),
    ("loop_static.onnx", LOOP_STATIC, lambda: {"W": dense(4, 4)}),
    ("loop_scan.onnx", LOOP_SCAN, lambda: {"Wh0": dense(3, 5), "Wx": dense(3, 5), "Wh": dense(5, 5)}),
    ("loop_dynamic.onnx", LOOP_DYNAMIC, lambda: {"W": dense(3, 3)}),
    ("if_ignores_x.onnx", IF_IGNORES_X, lambda: {"W": dense(2, 3)}),
]


def build(text: str, weights: dict) -> onnx.ModelProto:
    model = onnx.parser.parse_model(HEADER + text)
    for name, value in weights.items():
        model.graph.initializer.append(numpy_helper.from_array(value, name))
    model.producer_name = "onnxplain-zoo/control_flow"
    return model


def verify(model: onnx.ModelProto) -> str:
    """onnxruntime and the reference evaluator agree on a random input. onnx 1.23's reference Loop
    concatenates scan outputs with np.vstack instead of stacking them, and its Scan refuses axes and
    directions other than 0; tests/oracle.py overrides both, and tests/test_control_flow.py compares
    those models with onnxruntime."""
    import onnxruntime as ort
    from onnx.reference import ReferenceEvaluator

    rng = np.random.default_rng(5)
    feeds = {}
    for vi in model.graph.input:
        dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        if vi.type.tensor_type.elem_type == onnx.TensorProto.INT64:
            feeds[vi.name] = np.array(3, dtype=np.int64)
        else:
            feeds[vi.name] = rng.standard_normal(dims).astype(np.float32)
    if any(n.op_type == "Scan" or (n.op_type == "Loop" and len(n.output) > len(n.input) - 2) for n in model.graph.node):
        return "reference skipped (Loop scan outputs / Scan axes)"
    ref = ReferenceEvaluator(model).run(None, feeds)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    err = max(float(np.max(np.abs(a - b))) for a, b in zip(ref, got))
    assert err < 1e-4, err
    return f"max|ort-ref|={err:.1e}"


def main() -> None:
    for fname, text, weights in MODELS:
        model = build(text, weights())
        path = save_checked(model, fname)
        print(f"{fname:22s} {path.stat().st_size:6d} B  {verify(model)}")


if __name__ == "__main__":
    main()
