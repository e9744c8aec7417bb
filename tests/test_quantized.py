"""Quantised and float16/bfloat16 models.

* The straight-through rule of QuantizeLinear -> DequantizeLinear (onnxplain/rules/vjp/quantize.py)
  against a numpy oracle of the same definition: g where qmin <= round(x / s) + zp <= qmax, else 0
  (round half to even, as ONNX Round and QuantizeLinear), per tensor and per axis, int4 to uint16,
  with and without zero points, on values that saturate, sit on rounding ties and on the range ends;
* chains of quantised layers against the same oracle written as a numpy forward/backward, and
  against the float model's finite-difference gradient where nothing saturates (there the estimator
  is by definition the gradient of the model with every DQ(Q(x)) replaced by x);
* the dequantised canonical graph of each quantised zoo model (tests/zoo/quant_*.onnx, made by
  models/zoo/quantized.py) computes what onnxruntime computes on the original, to one quantisation
  step, and every one of them gets a non-zero attribution;
* float16/bfloat16 models against the float32 model with the same weights.
"""

import pathlib

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper, numpy_helper
from oracle import Case, check_vjp, gradient_graph

import onnxplain
from onnxplain.errors import OnnxplainError
from onnxplain.graph.canonicalize import canonicalize, export_graph
from onnxplain.runtime.session import make_session

ZOO = pathlib.Path(__file__).parent / "zoo"
RANGES = {
    T.INT8: (-128, 127),
    T.UINT8: (0, 255),
    T.INT16: (-32768, 32767),
    T.UINT16: (0, 65535),
    T.INT4: (-8, 7),
    T.UINT4: (0, 15),
}
rng = np.random.default_rng(5)


# ---- one Q -> DQ pair ------------------------------------------------------------------------------
def qdq_model(x_shape, scale, zp, qtype, axis=None, opset=13, dynamic=False):
    """y = DequantizeLinear(QuantizeLinear(x, scale, zp), scale, zp) (zp None: omitted), or
    DynamicQuantizeLinear -> DequantizeLinear."""
    inits, attrs = [numpy_helper.from_array(np.asarray(scale, np.float32), "s")], {}
    if axis is not None:
        attrs["axis"] = axis
    if dynamic:
        nodes = [
            helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "qs", "qzp"]),
            helper.make_node("DequantizeLinear", ["q", "qs", "qzp"], ["y"]),
        ]
        inits = []
    else:
        qin = ["x", "s"]
        if zp is not None:
            zp = np.asarray(zp)
            inits.append(helper.make_tensor("zp", qtype, list(zp.shape), zp.ravel().tolist()))
            qin.append("zp")
        nodes = [
            helper.make_node("QuantizeLinear", qin, ["q"], **attrs),
            helper.make_node("DequantizeLinear", ["q"] + qin[1:], ["y"], **attrs),
        ]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("x", T.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("y", T.FLOAT, list(x_shape))],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10 if opset >= 21 else 8)


def interesting(shape, scale, zp, qtype, axis=None):
    """Values in and beyond the range, rounding ties (k + 1/2) s, both range ends and a half step past them."""
    s = np.broadcast_to(_along(np.asarray(scale, np.float32), len(shape), axis), shape)
    z = np.broadcast_to(_along(np.asarray(0 if zp is None else zp), len(shape), axis), shape)
    qmin, qmax = RANGES[qtype]
    steps = rng.uniform(qmin - 6, qmax + 6, size=shape)
    steps.flat[0::7] = np.round(steps.flat[0::7]) + 0.5  # ties
    x = (steps - z) * s
    ends = (
        (np.array([qmin, qmax, qmin - 0.5, qmax + 0.5, qmin - 0.75, qmax + 0.75, 0])[:, None] - z.reshape(-1))
        * s.reshape(-1)
    ).T
    x.flat[1 : 1 + 7 * 3 : 3] = ends.reshape(-1)[: len(x.flat[1 : 1 + 7 * 3 : 3])]
    return x.astype(np.float32)


def _along(v, r, axis):
    if v.ndim == 0 or v.size == 1:
        return v.reshape(())
    return v.reshape([-1 if i == axis % r else 1 for i in range(r)])


def ste_oracle(x, g, scale, zp, qtype, axis=None):
    """The estimator's definition in numpy: g where the unsaturated integer round(x / s) + zp lies in range."""
    qmin, qmax = RANGES[qtype]
    s = _along(np.asarray(scale, np.float32), x.ndim, axis)
    z = _along(np.asarray(0 if zp is None else zp, np.float32), x.ndim, axis)
    q = np.rint(x / s) + z
    return g * ((q >= qmin) & (q <= qmax))


def qcase(id, shape, scale, zp, qtype, axis=None, opset=13, op="QuantizeLinear"):
    model = qdq_model(shape, scale, zp, qtype, axis, opset)
    x = interesting(shape, scale, zp, qtype, axis)
    c = Case(op, model, {"x": x}, ["x"], "y", id)
    c.extra = {"scale": scale, "zp": zp, "qtype": qtype, "axis": axis}
    return c


CASES = [
    qcase("int8-zp", (2, 3, 4), 0.05, 3, T.INT8),
    qcase("uint8-zp", (2, 3, 4), 0.02, 128, T.UINT8),
    qcase("uint8-no-zp-opset11", (3, 5), 0.1, None, T.UINT8, opset=11),
    qcase("int16-zp-opset21", (2, 6), 0.001, -7, T.INT16, opset=21),
    qcase("uint16-zp-opset21", (2, 6), 0.003, 30000, T.UINT16, opset=21),
    qcase("int4-zp-opset21", (4, 5), 0.25, 1, T.INT4, opset=21),
    qcase("uint4-opset21", (4, 5), 0.25, 2, T.UINT4, opset=21),
    qcase("int8-per-axis1", (2, 3, 4), [0.05, 0.1, 0.2], [0, 5, -5], T.INT8, axis=1, op="DequantizeLinear"),
    qcase(
        "uint8-per-axis-last",
        (2, 3, 4),
        [0.05, 0.1, 0.2, 0.01],
        [128, 100, 3, 250],
        T.UINT8,
        axis=-1,
        op="DequantizeLinear",
    ),
    qcase("uint8-per-axis0-no-zp", (3, 4), [0.01, 0.02, 0.03], None, T.UINT8, axis=0, op="DequantizeLinear"),
]


def gradient(model, feeds, w, wrt="x", output="y"):
    return make_session(gradient_graph(model, wrt, output)).run(None, {**feeds, "target_weights": w})


@pytest.mark.parametrize("c", [c for c in CASES if c.op != "DynamicQuantizeLinear"], ids=repr)
def test_qdq_pair_is_straight_through_with_clip(c):
    x = c.feeds["x"]
    w = rng.normal(size=x.shape).astype(np.float32)
    y, grad = gradient(c.model, c.feeds, w)[:2]
    want = ste_oracle(x, w, **c.extra)
    np.testing.assert_array_equal(grad != 0, want != 0)  # the same elements pass
    np.testing.assert_allclose(grad, want, rtol=2e-7)  # g s / s: one rounding
    assert 0 < np.count_nonzero(want) < want.size  # some values saturate, most pass
    # the forward is the model's own
    np.testing.assert_array_equal(y, ort.InferenceSession(c.model.SerializeToString()).run(None, c.feeds)[0])


def _dynamic_case():
    x = rng.normal(size=(3, 8)).astype(np.float32) * 2
    return Case(
        "DynamicQuantizeLinear",
        qdq_model(x.shape, 1, None, T.UINT8, dynamic=True),
        {"x": x},
        ["x"],
        "y",
        "dynamic-uint8",
    )


CASES.append(_dynamic_case())


def test_dynamic_quantize_is_straight_through():
    """DynamicQuantizeLinear's range covers x (and 0), so nothing saturates: the gradient passes whole,
    by the same definition with the scale and zero point that it computed."""
    c = CASES[-1]
    x = c.feeds["x"]
    w = rng.normal(size=x.shape).astype(np.float32)
    _, grad = gradient(c.model, c.feeds, w)[:2]
    lo, hi = min(x.min(), 0), max(x.max(), 0)
    s = np.float32((hi - lo) / 255)
    zp = np.clip(np.rint(-lo / s), 0, 255)
    np.testing.assert_allclose(grad, ste_oracle(x, w, s, zp, T.UINT8), rtol=2e-7)
    np.testing.assert_allclose(grad, w, rtol=2e-7)


# ---- chains of quantised layers -----------------------------------------------------------------------
def _q(name, scale, zp, qtype, axis=None):
    """Initializers and Q -> DQ nodes for tensor ``name`` -> ``name + '_dq'``."""
    zp = np.asarray(zp)
    inits = [
        numpy_helper.from_array(np.asarray(scale, np.float32), f"{name}_s"),
        helper.make_tensor(f"{name}_zp", qtype, list(zp.shape), zp.ravel().tolist()),
    ]
    attrs = {} if axis is None else {"axis": axis}
    nodes = [
        helper.make_node("QuantizeLinear", [name, f"{name}_s", f"{name}_zp"], [f"{name}_q"], **attrs),
        helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_zp"], [f"{name}_dq"], **attrs),
    ]
    return inits, nodes


def _weight(name, w, axis):
    """Per-axis symmetric int8 weight behind a DequantizeLinear, and its dequantised float value."""
    s = (np.abs(w).max(axis=tuple(i for i in range(w.ndim) if i != axis)) / 127).astype(np.float32)
    q = np.clip(np.rint(w / _along(s, w.ndim, axis)), -127, 127).astype(np.int8)
    inits = [
        numpy_helper.from_array(q, f"{name}_int"),
        numpy_helper.from_array(s, f"{name}_s"),
        numpy_helper.from_array(np.zeros_like(s, dtype=np.int8), f"{name}_zp"),
    ]
    node = helper.make_node("DequantizeLinear", [f"{name}_int", f"{name}_s", f"{name}_zp"], [name], axis=axis)
    return inits, [node], (q.astype(np.float32) * _along(s, w.ndim, axis)).astype(np.float32)


def chain(nonlinear: bool, scales, x_shape=(4, 6)):
    """x -> QDQ -> Gemm(W1) -> QDQ -> [Tanh -> QDQ] -> Gemm(W2) -> QDQ -> y, weights per-axis int8; with
    ``nonlinear=False`` also the float model with every activation Q -> DQ pair removed."""
    r = np.random.default_rng(11)
    w1, w2 = r.normal(size=(6, 5)).astype(np.float32), r.normal(size=(5, 3)).astype(np.float32)
    i1, n1, w1f = _weight("w1", w1, 1)
    i2, n2, w2f = _weight("w2", w2, 1)
    sx, sh, st, sy = scales
    iq = []
    blocks = []
    for name, (s, zp, qt) in {
        "x": (sx, 2, T.INT8),
        "h": (sh, 100, T.UINT8),
        "t": (st, 0, T.INT8),
        "y": (sy, -3, T.INT8),
    }.items():
        i, n = _q(name, s, zp, qt)
        iq += i
        blocks.append(n)

    floats = [numpy_helper.from_array(w1f, "w1"), numpy_helper.from_array(w2f, "w2")]  # the same weights, dequantised

    def build(quantised):
        src = (lambda t: f"{t}_dq") if quantised else (lambda t: t)
        nodes = list(n1 + n2 + blocks[0]) if quantised else []
        nodes.append(helper.make_node("MatMul", [src("x"), "w1"], ["h"]))
        nodes += blocks[1] if quantised else []
        last = src("h")
        if nonlinear:
            nodes.append(helper.make_node("Tanh", [last], ["t"]))
            nodes += blocks[2] if quantised else []
            last = src("t")
        nodes.append(helper.make_node("MatMul", [last, "w2"], ["y"]))
        out = "y"
        if quantised:
            nodes += blocks[3]
            out = "y_dq"
        graph = helper.make_graph(
            nodes,
            "chain",
            [helper.make_tensor_value_info("x", T.FLOAT, list(x_shape))],
            [helper.make_tensor_value_info(out, T.FLOAT, [x_shape[0], 3])],
            i1 + i2 + iq if quantised else floats,
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), out

    return build(True), build(False), (w1f, w2f)


def test_chain_matches_numpy_straight_through():
    """A quantised MLP with saturating activations against the estimator's definition in numpy:
    the float chain rule, each DQ(Q(.)) contributing its mask."""
    scales = (0.01, 0.02, 0.004, 0.02)
    (model, out), _, (w1, w2) = chain(True, scales)
    x = (rng.normal(size=(4, 6)) * 0.6).astype(np.float32)
    w = rng.normal(size=(4, 3)).astype(np.float32)
    grad = make_session(gradient_graph(model, "x", out)).run(["attribution"], {"x": x, "target_weights": w})[0]

    def fq(v, s, zp, qt):
        lo, hi = RANGES[qt]
        q = np.rint(v / np.float32(s)) + zp
        return ((np.clip(q, lo, hi) - zp) * np.float32(s)).astype(np.float32), (q >= lo) & (q <= hi)

    a0, m0 = fq(x, scales[0], 2, T.INT8)
    a1, m1 = fq(a0 @ w1, scales[1], 100, T.UINT8)
    t = np.tanh(a1)
    a2, m2 = fq(t, scales[2], 0, T.INT8)
    _, m3 = fq(a2 @ w2, scales[3], -3, T.INT8)
    g = ((((w * m3) @ w2.T) * m2 * (1 - t * t)) * m1) @ w1.T * m0
    assert 0 < m1.mean() < 1 and 0 < m2.mean() < 1  # the oracle exercises saturation
    np.testing.assert_allclose(grad, g, rtol=1e-4, atol=1e-5 * np.abs(g).max())


def test_chain_inside_range_equals_float_gradient():
    """Where no quantiser saturates, the estimator is the gradient of the float model with every
    DQ(Q(x)) replaced by x (same dequantised weights), checked by float64 finite differences."""
    s = 0.05
    (model, out), (float_model, fout), (w1, w2) = chain(False, (s, s, s, s))
    x = (rng.normal(size=(4, 6)) * 0.5).astype(np.float32)
    w = rng.normal(size=(4, 3)).astype(np.float32)
    grad = make_session(gradient_graph(model, "x", out)).run(["attribution"], {"x": x, "target_weights": w})[0]
    assert check_vjp(float_model, {"x": x}, "x", fout).error < 1e-6  # the float gradient graph is right
    g64 = make_session(gradient_graph(float_model, "x", fout)).run(["attribution"], {"x": x, "target_weights": w})[0]
    # nothing saturates, a step clear of each range [(qmin - zp) s, (qmax - zp) s] (zero points 2, 100, -3)
    for v, (lo, hi) in ((x, (-130, 125)), (x @ w1, (-100, 155)), (x @ w1 @ w2, (-125, 130))):
        assert (lo + 1) * s < v.min() and v.max() < (hi - 1) * s
    np.testing.assert_allclose(grad, g64, rtol=1e-5, atol=1e-6)


# ---- quantised zoo models ---------------------------------------------------------------------------------
QUANT_ZOO = {
    "quant_qdq.onnx": (2, 3, 16, 16),
    "quant_qoperator.onnx": (2, 3, 16, 16),
    "quant_qoperator_ops.onnx": (2, 3, 8, 8),
    "quant_dynamic.onnx": (2, 3, 16, 16),
}


def _output_step(model: onnx.ModelProto) -> float | None:
    """The scale of the DequantizeLinear that gives the model's output (None: a float output)."""
    out = model.graph.output[0].name
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if out in n.output and n.op_type == "DequantizeLinear":
            return float(inits[n.input[1]])
    return None


@pytest.mark.parametrize("name", sorted(QUANT_ZOO))
def test_dequantized_graph_computes_the_original(name):
    model = onnx.load(str(ZOO / name))
    x = np.random.default_rng(3).normal(size=(16,) + QUANT_ZOO[name][1:]).astype(np.float32)
    want = ort.InferenceSession(str(ZOO / name)).run(None, {"x": x})[0]
    can = canonicalize(model)
    ops = {n.op for n in can.graph.nodes}
    assert not ops & {"QLinearConv", "QLinearMatMul", "QGemm", "MatMulInteger", "ConvInteger", "QLinearAdd"}
    got = make_session(export_graph(can.graph, can.model)).run(None, {"x": x})[0]
    step = _output_step(model)
    tol = step if step is not None else 1e-5 * np.abs(want).max()
    assert np.abs(got - want).max() <= tol * 1.001
    # the explanation graph's own forward outputs too (dynamic quantisation's range is the whole batch's)
    res = onnxplain.Explainer(model).run(x, batch_size=len(x))
    assert np.abs(next(iter(res.outputs.values())) - want).max() <= tol * 1.001


@pytest.mark.parametrize("name", sorted(QUANT_ZOO))
@pytest.mark.parametrize("method", ["gradient", "integrated_gradients", "lrp_epsilon", "deeplift"])
def test_quantized_zoo_attribution_is_not_zero(name, method):
    x = np.random.default_rng(4).normal(size=QUANT_ZOO[name]).astype(np.float32)
    a = onnxplain.Explainer(str(ZOO / name)).explain(x, method)
    assert np.all(np.isfinite(a))
    assert np.count_nonzero(a) > 0.3 * a.size


def test_qoperator_gradient_equals_its_qdq_form():
    """QOperator dequantised = the QDQ graph onnxruntime would have written: the same attribution as
    an explicit Q/DQ rewrite of the same QLinearConv, built by hand here."""
    r = np.random.default_rng(8)
    w = r.integers(-127, 128, size=(4, 2, 3, 3)).astype(np.int8)
    ws = np.float32(0.01)
    inits = [
        numpy_helper.from_array(np.float32(0.05), "xs"),
        numpy_helper.from_array(np.uint8(128), "xzp"),
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(ws, "ws"),
        numpy_helper.from_array(np.int8(0), "wzp"),
        numpy_helper.from_array(np.float32(0.1), "ys"),
        numpy_helper.from_array(np.uint8(120), "yzp"),
        numpy_helper.from_array(r.integers(-500, 500, size=4).astype(np.int32), "b"),
    ]
    qop = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xzp"], ["xq"]),
        helper.make_node(
            "QLinearConv", ["xq", "xs", "xzp", "w", "ws", "wzp", "ys", "yzp", "b"], ["yq"], pads=[1, 1, 1, 1]
        ),
        helper.make_node("DequantizeLinear", ["yq", "ys", "yzp"], ["y"]),
    ]
    wf = numpy_helper.from_array(w.astype(np.float32) * ws, "wf")
    bf = numpy_helper.from_array((numpy_helper.to_array(inits[-1]).astype(np.float32) * np.float32(0.05) * ws), "bf")
    qdq = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xzp"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xzp"], ["xd"]),
        helper.make_node("Conv", ["xd", "wf", "bf"], ["yf"], pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["yf", "ys", "yzp"], ["yq"]),
        helper.make_node("DequantizeLinear", ["yq", "ys", "yzp"], ["y"]),
    ]
    io = (
        [helper.make_tensor_value_info("x", T.FLOAT, [1, 2, 5, 5])],
        [helper.make_tensor_value_info("y", T.FLOAT, [1, 4, 5, 5])],
    )
    models = [
        helper.make_model(
            helper.make_graph(n, "g", *io, inits + extra), opset_imports=[helper.make_opsetid("", 13)], ir_version=8
        )
        for n, extra in ((qop, []), (qdq, [wf, bf]))
    ]
    x = r.normal(size=(1, 2, 5, 5)).astype(np.float32) * 3
    wt = r.normal(size=(1, 4, 5, 5)).astype(np.float32)
    g_qop, g_qdq = (gradient(m, {"x": x}, wt)[1] for m in models)
    assert np.count_nonzero(g_qdq) > 0.3 * g_qdq.size
    np.testing.assert_allclose(g_qop, g_qdq, rtol=1e-6, atol=1e-7)


def test_unsupported_integer_op_is_refused_by_name():
    graph = helper.make_graph(
        [
            helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"]),
            helper.make_node("Relu", ["q"], ["r"], name="int_relu"),
            helper.make_node("DequantizeLinear", ["r", "s", "zp"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", T.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", T.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.float32(0.1), "s"), numpy_helper.from_array(np.int8(0), "zp")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)
    with pytest.raises(OnnxplainError, match="Relu 'int_relu'"):
        onnxplain.Explainer(model)


def test_float8_quantizer_is_refused_by_name():
    zp = helper.make_tensor("zp", T.FLOAT8E4M3FN, [], [0])
    graph = helper.make_graph(
        [
            helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="q8"),
            helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", T.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", T.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.float32(0.1), "s"), zp],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
    with pytest.raises(OnnxplainError, match="[qQ]uantizeLinear '.*': quantised type FLOAT8E4M3FN is not supported"):
        onnxplain.build(model, "gradient", onnxplain.Options(target_mode="weights"))


# ---- float16 / bfloat16 ---------------------------------------------------------------------------------
def _as_float32(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same network in float32: each float16/bfloat16 weight widened exactly, inputs/outputs float."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for i, t in enumerate(m.graph.initializer):
        m.graph.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name))
    for vi in list(m.graph.input) + list(m.graph.output):
        vi.type.tensor_type.elem_type = T.FLOAT
    return m


@pytest.mark.parametrize(
    "name, low, tol", [("cnn_fp16.onnx", np.float16, 2e-3), ("cnn_bf16.onnx", ml_dtypes.bfloat16, 1e-6)]
)
@pytest.mark.parametrize("method", ["gradient", "gradcam", "deeplift"])
def test_low_precision_gradient_matches_float32(name, low, tol, method):
    model = onnx.load(str(ZOO / name))
    assert {t.data_type for t in model.graph.initializer} == {onnx.helper.np_dtype_to_tensor_dtype(np.dtype(low))}
    x = np.random.default_rng(6).normal(size=(2, 3, 16, 16)).astype(low).astype(np.float32)  # representable
    ex = onnxplain.Explainer(model)
    res = ex.run(x, method, target=[3, 5])
    ref = onnxplain.Explainer(_as_float32(model)).run(x, method, target=[3, 5])
    a, b = res.attribution.astype(np.float32), ref.attribution
    assert np.abs(b).max() > 0
    np.testing.assert_allclose(a, b, rtol=0, atol=tol * np.abs(b).max())
    out, ref_out = next(iter(res.outputs.values())).astype(np.float32), next(iter(ref.outputs.values()))
    np.testing.assert_allclose(out, ref_out, rtol=0, atol=tol * np.abs(ref_out).max())


def test_float16_graph_keeps_float16_inputs_and_outputs():
    model = onnx.load(str(ZOO / "cnn_fp16.onnx"))
    m = onnxplain.build(model, "gradient")
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(m.graph.input) + list(m.graph.output)}
    assert types["x"] == T.FLOAT16 and types["probs"] == T.FLOAT16 and types["attribution"] == T.FLOAT16
    assert m.metadata_props and {p.key: p.value for p in m.metadata_props}["onnxplain.explained"] != "probs"
    x = np.random.default_rng(7).normal(size=(2, 3, 16, 16)).astype(np.float16)
    sess = ort.InferenceSession(m.SerializeToString())
    probs, a = sess.run(["probs", "attribution"], {"x": x, "target": np.array([1, 2])})
    own = ort.InferenceSession(str(ZOO / "cnn_fp16.onnx")).run(None, {"x": x})[0]
    np.testing.assert_allclose(probs.astype(np.float32), own.astype(np.float32), atol=2e-3)
    assert np.count_nonzero(a) > 0.3 * a.size


def test_bfloat16_graph_takes_float32_and_bfloat16_arrays():
    model = onnx.load(str(ZOO / "cnn_bf16.onnx"))
    m = onnxplain.build(model, "gradient")
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(m.graph.input) + list(m.graph.output)}
    assert types["x"] == T.FLOAT and types["logits"] == T.FLOAT
    x = np.random.default_rng(7).normal(size=(2, 3, 16, 16)).astype(ml_dtypes.bfloat16)
    ex = onnxplain.Explainer(model)
    np.testing.assert_array_equal(ex.explain(x), ex.explain(x.astype(np.float32)))
