"""DeepLIFT (rescale rule) against independent numpy implementations and its completeness property.

* small MLPs and CNNs built with onnx.helper, against a slow numpy DeepLIFT written from the paper
  (Shrikumar et al. 2017): forward both passes, then multipliers back layer by layer (linear:
  W^T m; nonlinearity: m Δy/Δx; max pooling: the documented mix of the two winners, by loops);
* completeness, sum(attribution) = sum(w * (f(x) - f(x'))), on every zoo model in float64 (the
  graph built from the float64 model and run by onnx.reference), and in float32 onnxruntime;
* each rule on its own with numpy expectations: rescale for every op family (and its fallback to
  the gradient where |Δx| is tiny), Shapley products, max/min, softmax and normalisation (which
  must agree with the same layer spelled out in primitive ops), Where, projection;
* the baseline input: default zeros, broadcast baselines, fixed-batch-1 models, the Python API;
  without it (the default) a fixed zero baseline whose forward copy onnxruntime folds.
"""

import json
import pathlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from oracle import X, case, run_ref, to_float64

import onnxplain
from onnxplain import Explainer
from onnxplain.graph.load import load_model, opset_of
from onnxplain.runtime.session import make_session

F32 = TensorProto.FLOAT
ZOO = pathlib.Path(__file__).parent / "zoo"
MANIFEST = json.loads((ZOO / "manifest.json").read_text())
ORT_MAX_OPSET = 25


# ---- helpers ------------------------------------------------------------------------------
def make(nodes, x_shape, inits, opset=17, output="y", x="x", y_shape=None):
    """A model from nodes; ``inits`` name -> array become float32 initializers."""
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(x, F32, list(x_shape))],
        [helper.make_tensor_value_info(output, F32, y_shape)],
        [
            numpy_helper.from_array(
                np.asarray(v, dtype=np.float32) if np.asarray(v).dtype.kind == "f" else np.asarray(v), k
            )
            for k, v in inits.items()
        ],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    if y_shape is None:
        inferred = onnx.shape_inference.infer_shapes(m, strict_mode=True)
        del m.graph.output[:]
        m.graph.output.extend(inferred.graph.output)
    return m


def options(model, input=None, output=None, rules=None, baseline_input=True):
    return onnxplain.Options(
        input=input or model.graph.input[0].name,
        output=output or model.graph.output[0].name,
        probabilities=True,
        target_mode="weights",
        rules=rules,
        baseline_input=baseline_input,
    )


def forward64(model, x, input=None, output=None):
    m64 = to_float64(model)
    return run_ref(m64, {input or model.graph.input[0].name: x})[output or model.graph.output[0].name]


def deeplift64(model, x, base, w, input=None, output=None, rules=None):
    """The DeepLIFT graph built from the float64 model, run by onnx.reference."""
    m64 = to_float64(model)
    g = onnxplain.build(m64, "deeplift", options(m64, input, output, rules))
    return run_ref(g, {input or model.graph.input[0].name: x, "baseline": base, "target_weights": w})["attribution"]


def deeplift32(model, x, base, w, input=None, output=None):
    g = onnxplain.build(model, "deeplift", options(model, input, output))
    feeds = {input or model.graph.input[0].name: x.astype(np.float32), "target_weights": w.astype(np.float32)}
    if base is not None:
        feeds["baseline"] = base.astype(np.float32)
    return make_session(g).run(["attribution"], feeds)[0]


def f32(a):
    return np.asarray(a, dtype=np.float32).astype(np.float64)  # the values the float32 model stores


rng = np.random.default_rng(0)


# ---- a numpy DeepLIFT, following the paper ------------------------------------------------
ACTS = {
    "Relu": (lambda z: np.maximum(z, 0), lambda z: (z > 0).astype(float)),
    "Sigmoid": (lambda z: 1 / (1 + np.exp(-z)), lambda z: np.exp(-z) / (1 + np.exp(-z)) ** 2),
    "Tanh": (np.tanh, lambda z: 1 - np.tanh(z) ** 2),
    "Softplus": (lambda z: np.log1p(np.exp(z)), lambda z: 1 / (1 + np.exp(-z))),
}


def rescale_multiplier(z, zb, act):
    """Δy/Δx of the paper's rescale rule, the derivative where Δx = 0."""
    f, df = ACTS[act]
    dz = z - zb
    return np.where(dz == 0, df(z), (f(z) - f(zb)) / np.where(dz == 0, 1, dz))


def mlp(sizes, acts, seed):
    r = np.random.default_rng(seed)
    nodes, inits, prev = [], {}, "x"
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        W, c = f32(r.normal(size=(n_out, n_in)) / np.sqrt(n_in)), f32(r.normal(size=n_out) * 0.3)
        inits[f"W{i}"], inits[f"c{i}"] = W, c
        out = "y" if i == len(sizes) - 2 else f"z{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"W{i}", f"c{i}"], [out], transB=1))
        layers.append(("linear", W, c))
        prev = out
        if i < len(acts):
            nodes.append(helper.make_node(acts[i], [out], [f"a{i}"]))
            layers.append(("act", acts[i]))
            prev = f"a{i}"
    return make(nodes, ["N", sizes[0]], inits), layers


def numpy_deeplift_mlp(layers, x, xb, w):
    acts, acts_b = [x], [xb]
    for kind, *p in layers:
        if kind == "linear":
            acts.append(acts[-1] @ p[0].T + p[1])
            acts_b.append(acts_b[-1] @ p[0].T + p[1])
        else:
            f = ACTS[p[0]][0]
            acts.append(f(acts[-1]))
            acts_b.append(f(acts_b[-1]))
    m = w
    for i in reversed(range(len(layers))):
        kind, *p = layers[i]
        m = m @ p[0] if kind == "linear" else m * rescale_multiplier(acts[i], acts_b[i], p[0])
    return (x - xb) * m, acts[-1] - acts_b[-1]


@pytest.mark.parametrize("acts", [["Relu", "Relu"], ["Sigmoid", "Tanh"], ["Softplus", "Relu"]], ids="-".join)
def test_mlp_matches_numpy_deeplift(acts):
    model, layers = mlp([6, 8, 7, 3], acts, seed=1)
    x, xb = rng.normal(size=(4, 6)), rng.normal(size=(4, 6)) * 0.5
    w = rng.normal(size=(4, 3))
    want, dy = numpy_deeplift_mlp(layers, x, xb, w)
    got = deeplift64(model, x, xb, w)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got.sum(), np.sum(w * dy), rtol=1e-12)
    # DeepLIFT is not the gradient times Δx here
    grad = run_ref(onnxplain.build(to_float64(model), "gradient", options(model)), {"x": x, "target_weights": w})
    assert np.abs(grad["attribution"] * (x - xb) - got).max() > 1e-3 * np.abs(got).max()
    np.testing.assert_allclose(deeplift32(model, x, xb, w), want, rtol=1e-3, atol=1e-5)


def test_linear_model_attribution_is_weight_times_difference():
    model, layers = mlp([5, 3], [], seed=2)
    x, xb, w = rng.normal(size=(2, 5)), rng.normal(size=(2, 5)), rng.normal(size=(2, 3))
    np.testing.assert_allclose(deeplift64(model, x, xb, w), (x - xb) * (w @ layers[0][1]), rtol=1e-12)


def conv2d(x, W, c, pad):
    n, ci, h, wd = x.shape
    co, _, k, _ = W.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = h + 2 * pad - k + 1, wd + 2 * pad - k + 1
    y = np.zeros((n, co, ho, wo))
    for i in range(ho):
        for j in range(wo):
            y[:, :, i, j] = np.einsum("nckl,ockl->no", xp[:, :, i : i + k, j : j + k], W) + c
    return y


def conv2d_back(m, W, x_shape, pad):
    """Multipliers of a conv's input: the transpose of the linear map, by loops."""
    n, ci, h, wd = x_shape
    k = W.shape[2]
    mp = np.zeros((n, ci, h + 2 * pad, wd + 2 * pad))
    for i in range(m.shape[2]):
        for j in range(m.shape[3]):
            mp[:, :, i : i + k, j : j + k] += np.einsum("no,ockl->nckl", m[:, :, i, j], W)
    return mp[:, :, pad : pad + h, pad : pad + wd]


def max_pool(x, k, s):
    """(y, flat index of the first maximum of each window) per (n, c)."""
    n, c, h, wd = x.shape
    ho, wo = (h - k) // s + 1, (wd - k) // s + 1
    y, idx = np.zeros((n, c, ho, wo)), np.zeros((n, c, ho, wo, 2), dtype=int)
    for a in range(n):
        for b in range(c):
            for i in range(ho):
                for j in range(wo):
                    win = x[a, b, i * s : i * s + k, j * s : j * s + k]
                    p = np.unravel_index(np.argmax(win), win.shape)  # first maximum, raster order
                    y[a, b, i, j] = win[p]
                    idx[a, b, i, j] = (i * s + p[0], j * s + p[1])
    return y, idx


def max_pool_back(m, x, xb, k, s):
    """The documented max rule: the winner i at x gets λ m, the winner k at x' gets (1 - λ) m,
    λ = (x_i - x_k) / ((x_i - x_k) + (x'_k - x'_i)), 1 when both margins are 0."""
    y, idx = max_pool(x, k, s)
    yb, idx_b = max_pool(xb, k, s)
    out = np.zeros_like(x)
    for a, b, i, j in np.ndindex(*y.shape):
        p, q = tuple(idx[a, b, i, j]), tuple(idx_b[a, b, i, j])
        gap, gap_b = x[a, b][p] - x[a, b][q], xb[a, b][q] - xb[a, b][p]
        lam = gap / (gap + gap_b) if gap + gap_b > 0 else 1.0
        out[a, b][p] += lam * m[a, b, i, j]
        out[a, b][q] += (1 - lam) * m[a, b, i, j]
    return out


def cnn(pool_k, pool_s, seed, opset=17):
    r = np.random.default_rng(seed)
    W1, c1 = f32(r.normal(size=(3, 2, 3, 3)) / 3), f32(r.normal(size=3) * 0.2)
    W2, c2 = f32(r.normal(size=(4, 3, 3, 3)) / 5), f32(r.normal(size=4) * 0.2)
    W3, c3 = f32(r.normal(size=(5, 4)) / 2), f32(r.normal(size=5) * 0.2)
    nodes = [
        helper.make_node("Conv", ["x", "W1", "c1"], ["z1"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["z1"], ["a1"]),
        helper.make_node("MaxPool", ["a1"], ["p1"], kernel_shape=[pool_k] * 2, strides=[pool_s] * 2),
        helper.make_node("Conv", ["p1", "W2", "c2"], ["z2"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["z2"], ["a2"]),
        helper.make_node("GlobalAveragePool", ["a2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "W3", "c3"], ["y"], transB=1),
    ]
    model = make(nodes, ["N", 2, 6, 6], dict(W1=W1, c1=c1, W2=W2, c2=c2, W3=W3, c3=c3), opset=opset)
    return model, (W1, c1, W2, c2, W3, c3)


def numpy_deeplift_cnn(params, k, s, x, xb, w):
    W1, c1, W2, c2, W3, c3 = params

    def fwd(t):
        z1 = conv2d(t, W1, c1, 1)
        a1 = np.maximum(z1, 0)
        p1 = max_pool(a1, k, s)[0]
        z2 = conv2d(p1, W2, c2, 1)
        a2 = np.maximum(z2, 0)
        return z1, a1, p1, z2, a2, a2.mean(axis=(2, 3)) @ W3.T + c3

    z1, a1, p1, z2, a2, y = fwd(x)
    z1b, a1b, p1b, z2b, a2b, yb = fwd(xb)
    m = w @ W3  # Gemm
    m = np.broadcast_to(m[:, :, None, None] / (a2.shape[2] * a2.shape[3]), a2.shape)  # average pool
    m = m * rescale_multiplier(z2, z2b, "Relu")
    m = conv2d_back(m, W2, p1.shape, 1)
    m = max_pool_back(m, a1, a1b, k, s)
    m = m * rescale_multiplier(z1, z1b, "Relu")
    m = conv2d_back(m, W1, x.shape, 1)
    return (x - xb) * m, y - yb


@pytest.mark.parametrize("k,s,opset", [(2, 2, 17), (3, 1, 17), (3, 1, 11)], ids=["pool2s2", "pool3s1", "pool3s1-op11"])
def test_cnn_matches_numpy_deeplift(k, s, opset):
    model, params = cnn(k, s, seed=3, opset=opset)
    x, xb = rng.normal(size=(2, 2, 6, 6)), rng.normal(size=(2, 2, 6, 6))
    w = rng.normal(size=(2, 5))
    want, dy = numpy_deeplift_cnn(params, k, s, x, xb, w)
    got = deeplift64(model, x, xb, w)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got.sum(), np.sum(w * dy), rtol=1e-10)
    np.testing.assert_allclose(deeplift32(model, x, xb, w), want, rtol=1e-3, atol=1e-5)


def test_residual_add_is_exact():
    """y = Relu(x W^T + c) + x: the Add passes m_y to both branches."""
    W, c = f32(rng.normal(size=(4, 4))), f32(rng.normal(size=4))
    model = make(
        [
            helper.make_node("Gemm", ["x", "W", "c"], ["z"], transB=1),
            helper.make_node("Relu", ["z"], ["a"]),
            helper.make_node("Add", ["a", "x"], ["y"]),
        ],
        ["N", 4],
        dict(W=W, c=c),
    )
    x, xb, w = rng.normal(size=(3, 4)), rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    z, zb = x @ W.T + c, xb @ W.T + c
    want = (x - xb) * ((w * rescale_multiplier(z, zb, "Relu")) @ W + w)
    got = deeplift64(model, x, xb, w)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(got.sum(), np.sum(w * (forward64(model, x) - forward64(model, xb))), rtol=1e-12)


# ---- completeness on the zoo --------------------------------------------------------------
@pytest.mark.parametrize("entry", MANIFEST, ids=[e["file"] for e in MANIFEST])
def test_zoo_completeness(entry):
    model = load_model(ZOO / entry["file"])
    r = np.random.default_rng(11)
    x = r.normal(size=entry["input_shape"])
    xb = r.normal(size=entry["input_shape"]) * 0.5
    inp, out = entry["input"], entry["output"]
    m64 = to_float64(model)
    dy = run_ref(m64, {inp: x})[out] - run_ref(m64, {inp: xb})[out]
    w = r.normal(size=dy.shape)
    want = float(np.sum(w * dy))
    g64 = onnxplain.build(m64, "deeplift", options(m64, inp, out))
    a = run_ref(g64, {inp: x, "baseline": xb, "target_weights": w})["attribution"]
    assert a.shape == x.shape
    err = abs(a.sum() - want) / abs(want)
    assert err <= 1e-4, f"float64 completeness: sum {a.sum():.6e} vs f(x) - f(x') {want:.6e} (rel {err:.1e})"
    g32 = onnxplain.build(model, "deeplift", options(model, inp, out))
    onnx.checker.check_model(g32, full_check=True)
    if opset_of(model) <= ORT_MAX_OPSET:
        a32 = make_session(g32).run(
            ["attribution"],
            {inp: x.astype(np.float32), "baseline": xb.astype(np.float32), "target_weights": w.astype(np.float32)},
        )[0]
        err32 = abs(float(a32.sum(dtype=np.float64)) - want) / abs(want)
        assert err32 <= 1e-3, f"float32 onnxruntime completeness: rel {err32:.1e}"
        assert np.linalg.norm(a32 - a) <= 1e-3 * np.linalg.norm(a)


@pytest.mark.parametrize(
    "name",
    [
        "resnet_ts13.onnx",
        "vit_ts17.onnx",
        "efficientnet_dynamo18.onnx",
        "densenet_ts17.onnx",
        "mobilenetv2_dynamo20.onnx",
        "convnext_erf_dynamo18.onnx",
    ],
)
def test_zoo_class_mode_zero_baseline_explains_logits(name):
    """The default: class targets (argmax), logits, zero baseline (not fed)."""
    entry = next(e for e in MANIFEST if e["file"] == name)
    model = load_model(ZOO / name)
    x = np.random.default_rng(5).normal(size=entry["input_shape"]).astype(np.float32)
    g = onnxplain.build(model, "deeplift")
    a, t, logits = make_session(g).run(["attribution", "target_index", entry["output"]], {entry["input"]: x})
    zero = make_session(model).run([entry["output"]], {entry["input"]: np.zeros_like(x)})[0]
    n = np.arange(len(x))
    want = logits[n, t].astype(np.float64) - zero[n, t]
    got = a.reshape(len(x), -1).sum(axis=1, dtype=np.float64)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())


# ---- rescale, op by op --------------------------------------------------------------------
def _pos(shape):
    return rng.uniform(0.3, 2.0, size=shape)


RESCALE_CASES = [
    ("Relu", {}, 17, None),
    ("LeakyRelu", {"alpha": 0.1}, 17, None),
    ("Elu", {"alpha": 0.7}, 17, None),
    ("Selu", {}, 17, None),
    ("Celu", {"alpha": 1.5}, 17, None),
    ("ThresholdedRelu", {"alpha": 0.3}, 17, None),
    ("Sigmoid", {}, 17, None),
    ("HardSigmoid", {}, 17, None),
    ("Tanh", {}, 17, None),
    ("HardSwish", {}, 17, None),
    ("Softplus", {}, 17, None),
    ("Softsign", {}, 17, None),
    ("Erf", {}, 17, None),
    ("Gelu", {}, 20, None),
    ("Gelu", {"approximate": "tanh"}, 20, None),
    ("Mish", {}, 18, None),
    ("Exp", {}, 17, None),
    ("Log", {}, 17, "pos"),
    ("Sqrt", {}, 17, "pos"),
    ("Abs", {}, 17, None),
    ("Reciprocal", {}, 17, "pos"),
    ("Sin", {}, 17, None),
    ("Cos", {}, 17, None),
    ("Neg", {}, 17, None),
    ("Cast", {"to": TensorProto.FLOAT}, 17, None),
]


@pytest.mark.parametrize(
    "op,attrs,opset,domain",
    RESCALE_CASES,
    ids=[f"{c[0]}{'-' + str(list(c[1].values())[0]) if c[1] else ''}" for c in RESCALE_CASES],
)
def test_rescale_elementwise(op, attrs, opset, domain):
    """For y = f(x) elementwise, rescale gives attribution = w * (f(x) - f(x')) element by element."""
    shape = (3, 5)
    x, xb = (_pos(shape), _pos(shape)) if domain == "pos" else (rng.normal(size=shape) * 2, rng.normal(size=shape) * 2)
    xb[0, :2] = x[0, :2]  # no difference: the fallback, no NaN
    c = case(op, X(x), opset=opset, **attrs)
    w = rng.normal(size=shape)
    got = deeplift64(c.model, x, xb, w)
    want = w * (forward64(c.model, x) - forward64(c.model, xb))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    assert np.all(got[0, :2] == 0)


@pytest.mark.parametrize(
    "op,inputs,opset",
    [
        ("PRelu", [np.array([0.1, -0.3, 0.5, 0.2, 0.0])], 17),
        ("Clip", [np.float32(-0.5), np.float32(0.8)], 17),
        ("Pow", [np.float32(3.0)], 17),
        ("Pow", [np.float32(2.0)], 11),
        ("Div", "numerator", 17),
    ],
    ids=["PRelu", "Clip", "Pow3", "Pow2-op11", "c-over-x"],
)
def test_rescale_with_constant_operands(op, inputs, opset):
    x, xb = rng.normal(size=(3, 5)) * 2, rng.normal(size=(3, 5)) * 2
    if inputs == "numerator":
        x, xb = _pos((3, 5)), _pos((3, 5))
        c = case("Div", np.float32(1.7), X(x), opset=opset)
        inp = "x1"
    else:
        c = case(op, X(x), *inputs, opset=opset)
        inp = "x0"
    w = rng.normal(size=(3, 5))
    got = deeplift64(c.model, x, xb, w, input=inp)
    want = w * (forward64(c.model, x, inp) - forward64(c.model, xb, inp))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "op,deriv",
    [
        ("Sigmoid", lambda x: np.exp(-x) / (1 + np.exp(-x)) ** 2),
        ("Tanh", lambda x: 1 - np.tanh(x) ** 2),
        ("Exp", np.exp),
    ],
)
def test_rescale_falls_back_to_the_gradient_where_the_difference_is_tiny(op, deriv):
    """|Δx| = 1e-12 in float64: the secant would carry a rounding error of ~1e-4; the multiplier
    is f'(x) to 1e-9 instead."""
    x = rng.normal(size=(2, 4))
    xb = x - 1e-12
    c = case(op, X(x))
    w = np.ones((2, 4))
    got = deeplift64(c.model, x, xb, w)
    np.testing.assert_allclose(got / (x - xb), deriv(x), rtol=1e-9)


def test_rescale_fallback_in_float32():
    """Sigmoid at x = 1e-6 against a zero baseline: the float32 secant is 0.238, the multiplier 0.25."""
    c = case("Sigmoid", X(np.full((1, 3), 1e-6)))
    x = np.full((1, 3), 1e-6, dtype=np.float32)
    got = deeplift32(c.model, x, np.zeros_like(x), np.ones((1, 3)))
    np.testing.assert_allclose(got / x, 0.25, rtol=1e-6)


@pytest.mark.parametrize(
    "op,inputs,x,xb",
    [
        ("Relu", [], [1e-6, 2e-7, 3.0], [-1e-6, -2e-7, 3.0]),
        ("Clip", [np.float32(0), np.float32(6)], [6.00001, 1e-6, 2.0], [5.99999, -1e-6, 2.0]),
        ("Abs", [], [1e-6, -3e-7, 4.0], [-1e-6, 2e-7, 4.0]),
    ],
)
def test_piecewise_linear_rescale_is_the_secant_even_across_a_kink_at_tiny_differences(op, inputs, x, xb):
    """Relu, Clip and Abs are x, -x or a constant on each piece, so the float32 secant is exact: a
    difference of 2e-6 across the kink gets Δy/Δx (0.5 here, not the gradient at x), completeness holds
    to rounding, and Δx = 0 gets 0 (no NaN)."""
    x, xb = np.array([x], dtype=np.float32), np.array([xb], dtype=np.float32)
    c = case(op, X(x.astype(np.float64)), *inputs)
    got = deeplift32(c.model, x, xb, np.ones((1, 3)))
    want = make_session(c.model).run(None, {"x0": x})[0] - make_session(c.model).run(None, {"x0": xb})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=0)
    assert got[0, 2] == 0 and np.all(np.isfinite(got))


def test_rescale_threshold_is_a_parameter(tmp_path):
    """tiny = 0.5: |Δx| <= 0.5 max(1, |x|, |x'|) takes the gradient at x (Relu: 1 at x = 0.2)."""
    rules = tmp_path / "dl.toml"
    rules.write_text('[[rule]]\nops = ["Relu"]\nrule = "rescale"\ntiny = 0.5\n')
    c = case("Relu", X(np.zeros((1, 2))))
    x, xb = np.array([[0.2, 3.0]]), np.array([[-0.2, -3.0]])
    got = deeplift64(c.model, x, xb, np.ones((1, 2)), rules=str(rules))
    np.testing.assert_allclose(got, [[0.4, 3.0]])  # the gradient route, then the secant 3/6
    np.testing.assert_allclose(deeplift64(c.model, x, xb, np.ones((1, 2))), [[0.2, 3.0]])


@pytest.mark.parametrize("op", ["ReduceL2", "ReduceL1", "ReduceSumSquare", "ReduceLogSumExp", "ReduceLogSum"])
def test_rescaled_reductions(op):
    x, xb = rng.normal(size=(3, 4, 2)), rng.normal(size=(3, 4, 2))
    if op == "ReduceLogSum":
        x, xb = _pos((3, 4, 2)), _pos((3, 4, 2))
    c = case(op, X(x), axes=[1], keepdims=0)
    w = rng.normal(size=(3, 2))
    got = deeplift64(c.model, x, xb, w)
    want = w * (forward64(c.model, x) - forward64(c.model, xb))  # per reduced group
    np.testing.assert_allclose(got.sum(axis=1), want, rtol=1e-9, atol=1e-12)
    if op == "ReduceSumSquare":  # m = w (x + x'), exactly
        np.testing.assert_allclose(got, (x - xb) * w[:, None, :] * (x + xb), rtol=1e-12)
    if op == "ReduceL2":
        y, yb = np.sqrt((x**2).sum(1)), np.sqrt((xb**2).sum(1))
        np.testing.assert_allclose(got, (x - xb) * (w / (y + yb))[:, None, :] * (x + xb), rtol=1e-10)


# ---- Shapley products ---------------------------------------------------------------------
def two_branches(op3, extra_nodes=(), shape=(4,), seed=4):
    """a = x W1^T, b = x W2^T (b through ``extra_nodes``), y = op3(a, b)."""
    r = np.random.default_rng(seed)
    W1, W2 = f32(r.normal(size=(shape[0], 3))), f32(r.normal(size=(shape[0], 3)))
    nodes = [helper.make_node("MatMul", ["x", "W1T"], ["a"]), helper.make_node("MatMul", ["x", "W2T"], ["u"])]
    nodes += list(extra_nodes) or [helper.make_node("Identity", ["u"], ["b"])]
    nodes.append(helper.make_node(op3, ["a", "b"], ["y"]))
    return make(nodes, ["N", 3], dict(W1T=W1.T, W2T=W2.T)), W1, W2


def test_shapley_product_of_two_activations():
    model, W1, W2 = two_branches("Mul", [helper.make_node("Tanh", ["u"], ["b"])])
    x, xb, w = rng.normal(size=(3, 3)), rng.normal(size=(3, 3)), rng.normal(size=(3, 4))
    a, ab, u, ub = x @ W1.T, xb @ W1.T, x @ W2.T, xb @ W2.T
    b, bb = np.tanh(u), np.tanh(ub)
    m_a, m_b = w * (b + bb) / 2, w * (a + ab) / 2
    want = (x - xb) * (m_a @ W1 + (m_b * (b - bb) / (u - ub)) @ W2)
    got = deeplift64(model, x, xb, w)
    np.testing.assert_allclose(got, want, rtol=1e-10)
    np.testing.assert_allclose(got.sum(axis=1), (w * (a * b - ab * bb)).sum(axis=1), rtol=1e-12)


def test_shapley_division_of_two_activations():
    model, W1, W2 = two_branches("Div", [helper.make_node("Exp", ["u"], ["b"])])
    x, xb, w = rng.normal(size=(3, 3)), rng.normal(size=(3, 3)), rng.normal(size=(3, 4))
    a, ab, u, ub = x @ W1.T, xb @ W1.T, x @ W2.T, xb @ W2.T
    b, bb = np.exp(u), np.exp(ub)
    m_a, m_b = w * (1 / b + 1 / bb) / 2, -w * (a + ab) / 2 / (b * bb)
    want = (x - xb) * (m_a @ W1 + (m_b * (b - bb) / (u - ub)) @ W2)
    got = deeplift64(model, x, xb, w)
    np.testing.assert_allclose(got, want, rtol=1e-10)
    np.testing.assert_allclose(got.sum(), np.sum(w * (a / b - ab / bb)), rtol=1e-12)


def test_silu_and_square_of_one_tensor():
    """x * sigmoid(x) and x * x: both factors are the same tensor; Δ(x x) = (x + x') Δx exactly."""
    x, xb, w = rng.normal(size=(2, 6)), rng.normal(size=(2, 6)), rng.normal(size=(2, 6))
    sq = make([helper.make_node("Mul", ["x", "x"], ["y"])], ["N", 6], {})
    np.testing.assert_allclose(deeplift64(sq, x, xb, w), w * (x - xb) * (x + xb), rtol=1e-12)
    silu = make([helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"])], ["N", 6], {})
    s, sb = 1 / (1 + np.exp(-x)), 1 / (1 + np.exp(-xb))
    want = (x - xb) * (w * (s + sb) / 2 + w * (x + xb) / 2 * (s - sb) / (x - xb))
    got = deeplift64(silu, x, xb, w)
    np.testing.assert_allclose(got, want, rtol=1e-10)
    np.testing.assert_allclose(got, w * (x * s - xb * sb), rtol=1e-10)  # elementwise: one input per output


def test_squeeze_excitation_block():
    """y = x * sigmoid(mean over H, W of x): the gate broadcasts over the spatial axes."""
    model = make(
        [
            helper.make_node("ReduceMean", ["x"], ["z"], axes=[2, 3]),
            helper.make_node("Sigmoid", ["z"], ["s"]),
            helper.make_node("Mul", ["x", "s"], ["y"]),
        ],
        ["N", 3, 4, 4],
        {},
    )
    x, xb, w = rng.normal(size=(2, 3, 4, 4)), rng.normal(size=(2, 3, 4, 4)), rng.normal(size=(2, 3, 4, 4))
    z, zb = x.mean(axis=(2, 3), keepdims=True), xb.mean(axis=(2, 3), keepdims=True)
    s, sb = 1 / (1 + np.exp(-z)), 1 / (1 + np.exp(-zb))
    m_s = (w * (x + xb) / 2).sum(axis=(2, 3), keepdims=True)
    want = (x - xb) * (w * (s + sb) / 2 + m_s * (s - sb) / (z - zb) / 16)
    got = deeplift64(model, x, xb, w)
    np.testing.assert_allclose(got, want, rtol=1e-10)
    np.testing.assert_allclose(got.sum(), np.sum(w * (x * s - xb * sb)), rtol=1e-12)


@pytest.mark.parametrize("form", ["MatMul", "Einsum"])
def test_attention_scores_are_bilinear(form):
    """S = Q K^T with Q = x Wq, K = x Wk: m_Q = m_S K̄, m_K = m_S^T Q̄."""
    Wq, Wk = f32(rng.normal(size=(4, 4))), f32(rng.normal(size=(4, 4)))
    nodes = [helper.make_node("MatMul", ["x", "Wq"], ["q"]), helper.make_node("MatMul", ["x", "Wk"], ["k"])]
    if form == "MatMul":
        nodes += [
            helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
            helper.make_node("MatMul", ["q", "kt"], ["y"]),
        ]
    else:
        nodes += [helper.make_node("Einsum", ["q", "k"], ["y"], equation="bij,bkj->bik")]
    model = make(nodes, ["N", 3, 4], dict(Wq=Wq, Wk=Wk))
    x, xb, w = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 3, 3))
    q, qb, k, kb = x @ Wq, xb @ Wq, x @ Wk, xb @ Wk
    m_q = w @ ((k + kb) / 2)
    m_k = np.swapaxes(w, 1, 2) @ ((q + qb) / 2)
    want = (x - xb) * (m_q @ Wq.T + m_k @ Wk.T)
    got = deeplift64(model, x, xb, w)
    np.testing.assert_allclose(got, want, rtol=1e-10)
    scores = q @ np.swapaxes(k, 1, 2) - qb @ np.swapaxes(kb, 1, 2)
    np.testing.assert_allclose(got.sum(), np.sum(w * scores), rtol=1e-12)


# ---- max and min --------------------------------------------------------------------------
def _mix_route(vals, vals_b, w, is_max=True):
    """numpy: per set (last axis), λ to the winner at x, 1 - λ to the winner at x'."""
    pick = np.argmax if is_max else np.argmin
    out = np.zeros_like(vals)
    for idx in np.ndindex(*vals.shape[:-1]):
        v, vb = vals[idx], vals_b[idx]
        i, k = pick(v), pick(vb)
        gap, gap_b = (v[i] - v[k], vb[k] - vb[i]) if is_max else (v[k] - v[i], vb[i] - vb[k])
        lam = gap / (gap + gap_b) if gap + gap_b > 0 else 1.0
        out[idx + (i,)] += lam * w[idx]
        out[idx + (k,)] += (1 - lam) * w[idx]
    return out


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
def test_reduce_extremum(op):
    x, xb, w = rng.normal(size=(3, 5, 2)), rng.normal(size=(3, 5, 2)), rng.normal(size=(3, 2))
    c = case(op, X(x), axes=[1], keepdims=0)
    got = deeplift64(c.model, x, xb, w)
    m = np.moveaxis(_mix_route(np.moveaxis(x, 1, -1), np.moveaxis(xb, 1, -1), w, op == "ReduceMax"), -1, 1)
    np.testing.assert_allclose(got, (x - xb) * m, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(got.sum(axis=1), w * (forward64(c.model, x) - forward64(c.model, xb)), rtol=1e-10)
    assert np.all((m >= -1e-12 * np.abs(w).max()) | (w[:, None, :] < 0))  # multipliers in [0, 1] x w


def test_global_max_pool():
    x, xb, w = rng.normal(size=(2, 3, 3, 4)), rng.normal(size=(2, 3, 3, 4)), rng.normal(size=(2, 3, 1, 1))
    c = case("GlobalMaxPool", X(x))
    got = deeplift64(c.model, x, xb, w)
    m = _mix_route(x.reshape(2, 3, 12), xb.reshape(2, 3, 12), w[:, :, 0, 0]).reshape(x.shape)
    np.testing.assert_allclose(got, (x - xb) * m, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("op", ["Max", "Min"])
def test_elementwise_max_min_of_two_activations(op):
    model, W1, W2 = two_branches(op)
    x, xb, w = rng.normal(size=(5, 3)), rng.normal(size=(5, 3)), rng.normal(size=(5, 4))
    a, ab, b, bb = x @ W1.T, xb @ W1.T, x @ W2.T, xb @ W2.T
    m = _mix_route(np.stack([a, b], -1), np.stack([ab, bb], -1), w, op == "Max")
    want = (x - xb) * (m[..., 0] @ W1 + m[..., 1] @ W2)
    got = deeplift64(model, x, xb, w)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(got.sum(), np.sum(w * (forward64(model, x) - forward64(model, xb))), rtol=1e-12)


def test_max_pool_same_winners_is_gradient_routing():
    """Where both passes pick the same element, λ = 1: the gradient's route, and Δy = Δx_i."""
    x = rng.normal(size=(1, 2, 4, 4))
    xb = x * 0.5  # same order inside every window
    c = case("MaxPool", X(x), kernel_shape=[2, 2], strides=[2, 2])
    w = rng.normal(size=(1, 2, 2, 2))
    got = deeplift64(c.model, x, xb, w)
    grad = run_ref(onnxplain.build(to_float64(c.model), "gradient", options(c.model)), {"x0": x, "target_weights": w})[
        "attribution"
    ]
    np.testing.assert_allclose(got, grad * (x - xb), rtol=1e-12)


# ---- softmax, normalisation: the same as their spelled-out forms ---------------------------
def test_softmax_rule_equals_its_primitive_spelling():
    """Softmax = exp(x - log(sum(exp x))) in primitive ops, each one rescaled (or linear)."""
    x, xb, w = rng.normal(size=(3, 6)) * 3, rng.normal(size=(3, 6)) * 3, rng.normal(size=(3, 6))
    op = make([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], ["N", 6], {})
    spelled = make(
        [
            helper.make_node("Exp", ["x"], ["e"]),
            helper.make_node("ReduceSum", ["e", "ax"], ["s"], keepdims=1),
            helper.make_node("Log", ["s"], ["lse"]),
            helper.make_node("Sub", ["x", "lse"], ["z"]),
            helper.make_node("Exp", ["z"], ["y"]),
        ],
        ["N", 6],
        dict(ax=np.array([-1])),
    )
    got = deeplift64(op, x, xb, w)
    np.testing.assert_allclose(got, deeplift64(spelled, x, xb, w), rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(got.sum(axis=1), (w * (forward64(op, x) - forward64(op, xb))).sum(axis=1), rtol=1e-10)


def test_softmax_multipliers_stay_bounded_far_from_the_baseline():
    """Logits ~1000 apart: exp would overflow unshifted; every multiplier stays below sum |w|."""
    x, xb, w = rng.normal(size=(3, 6)) * 300, rng.normal(size=(3, 6)) * 300, rng.normal(size=(3, 6))
    op = make([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], ["N", 6], {})
    for model, _out in [(op, "y"), (make([helper.make_node("LogSoftmax", ["x"], ["y"], axis=-1)], ["N", 6], {}), "y")]:
        got = deeplift64(model, x, xb, w)
        assert np.all(np.isfinite(got))
        assert np.all(np.abs(got / (x - xb)) <= np.abs(w).sum(axis=1, keepdims=True) * 2)
        np.testing.assert_allclose(
            got.sum(axis=1), (w * (forward64(model, x) - forward64(model, xb))).sum(axis=1), rtol=1e-8, atol=1e-10
        )


def test_log_softmax_completeness_opset11():
    x, xb, w = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 3, 4))
    op = make([helper.make_node("LogSoftmax", ["x"], ["y"], axis=1)], ["N", 3, 4], {}, opset=11)  # 2-D coercion
    got = deeplift64(op, x, xb, w)
    np.testing.assert_allclose(
        got.sum(axis=(1, 2)), (w * (forward64(op, x) - forward64(op, xb))).sum(axis=(1, 2)), rtol=1e-10
    )


def test_layer_norm_rule_equals_its_primitive_spelling():
    x, xb, w = rng.normal(size=(2, 3, 8)), rng.normal(size=(2, 3, 8)), rng.normal(size=(2, 3, 8))
    scale, bias = f32(rng.normal(size=8)), f32(rng.normal(size=8))
    op = make(
        [helper.make_node("LayerNormalization", ["x", "sc", "bi"], ["y"], axis=-1, epsilon=1e-3)],
        ["N", 3, 8],
        dict(sc=scale, bi=bias),
    )
    spelled = make(
        [
            helper.make_node("ReduceMean", ["x"], ["mu"], axes=[-1]),
            helper.make_node("Sub", ["x", "mu"], ["xc"]),
            helper.make_node("Pow", ["xc", "two"], ["sq"]),
            helper.make_node("ReduceMean", ["sq"], ["v"], axes=[-1]),
            helper.make_node("Add", ["v", "eps"], ["ve"]),
            helper.make_node("Sqrt", ["ve"], ["sd"]),
            helper.make_node("Div", ["xc", "sd"], ["h"]),
            helper.make_node("Mul", ["h", "sc"], ["hs"]),
            helper.make_node("Add", ["hs", "bi"], ["y"]),
        ],
        ["N", 3, 8],
        dict(sc=scale, bi=bias, two=np.float32(2), eps=np.float32(1e-3)),
        opset=13,
    )
    got = deeplift64(op, x, xb, w)
    np.testing.assert_allclose(got, deeplift64(spelled, x, xb, w), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(got.sum(axis=2), (w * (forward64(op, x) - forward64(op, xb))).sum(axis=2), rtol=1e-10)


@pytest.mark.parametrize(
    "op,opset,attrs,shape",
    [
        ("InstanceNormalization", 17, {"epsilon": 1e-2}, (2, 3, 4, 5)),
        ("GroupNormalization", 21, {"num_groups": 2, "epsilon": 1e-2}, (2, 4, 3, 3)),
        ("BatchNormalization", 15, {"training_mode": 1}, (4, 3, 2, 2)),
    ],
)
def test_normalization_completeness(op, opset, attrs, shape):
    c = shape[1]
    x, xb, w = rng.normal(size=shape), rng.normal(size=shape), rng.normal(size=shape)
    ins = ["x", "sc", "bi"] + (["mean", "var"] if op == "BatchNormalization" else [])
    inits = dict(sc=f32(rng.normal(size=c)), bi=f32(rng.normal(size=c)), mean=np.zeros(c), var=np.ones(c))
    model = make(
        [helper.make_node(op, ins, ["y"], **attrs)],
        ["N", *shape[1:]],
        {k: inits[k] for k in ins[1:]},
        opset=opset,
        y_shape=["N", *shape[1:]],
    )
    got = deeplift64(model, x, xb, w)
    np.testing.assert_allclose(got.sum(), np.sum(w * (forward64(model, x) - forward64(model, xb))), rtol=1e-10)


# ---- Where, projection --------------------------------------------------------------------
def test_where_with_a_condition_on_the_input():
    """LeakyRelu spelled as Where(x > 0, x, 0.1 x): exact element by element."""
    model = make(
        [
            helper.make_node("Greater", ["x", "zero"], ["c"]),
            helper.make_node("Mul", ["x", "tenth"], ["b"]),
            helper.make_node("Where", ["c", "x", "b"], ["y"]),
        ],
        ["N", 6],
        dict(zero=np.float32(0), tenth=np.float32(0.1)),
    )
    x, xb, w = rng.normal(size=(3, 6)), rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
    lrelu = lambda t: np.where(t > 0, t, f32(0.1) * t)  # noqa: E731
    np.testing.assert_allclose(deeplift64(model, x, xb, w), w * (lrelu(x) - lrelu(xb)), rtol=1e-10, atol=1e-14)


def test_projection_rule_for_other_ops():
    """ReduceProd falls to the projection: m_x = Δx <w, Δy> / <Δx, Δx> per batch item."""
    x, xb, w = rng.normal(size=(3, 4)), rng.normal(size=(3, 4)), rng.normal(size=(3, 1))
    xb[2] = x[2]  # an item with no difference: the gradient, so a zero attribution
    c = case("ReduceProd", X(x), axes=[1], keepdims=1)
    got = deeplift64(c.model, x, xb, w)
    dx, dy = x - xb, x.prod(1, keepdims=True) - xb.prod(1, keepdims=True)
    want = dx * dx * (w * dy) / np.maximum((dx * dx).sum(1, keepdims=True), 1e-300)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-14)
    assert np.all(got[2] == 0)


def test_unknown_ops_fall_to_projection_and_stay_complete():
    """LpPool and LRN have no dedicated rule: the projection keeps completeness."""
    model = make(
        [
            helper.make_node("LRN", ["x"], ["l"], size=3),
            helper.make_node("LpPool", ["l"], ["y"], kernel_shape=[2, 2], p=3),
        ],
        ["N", 3, 4, 4],
        {},
    )
    x, xb = rng.normal(size=(2, 3, 4, 4)), rng.normal(size=(2, 3, 4, 4))
    w = rng.normal(size=(2, 3, 3, 3))
    got = deeplift64(model, x, xb, w)
    np.testing.assert_allclose(
        got.sum(axis=(1, 2, 3)), (w * (forward64(model, x) - forward64(model, xb))).sum(axis=(1, 2, 3)), rtol=1e-10
    )


# ---- the baseline and the Python API ------------------------------------------------------
def test_baseline_input_defaults_to_zeros_and_broadcasts():
    model, params = cnn(2, 2, seed=5)
    g = onnxplain.build(model, "deeplift", options(model))
    inputs = {i.name: i for i in g.graph.input}
    assert "baseline" in inputs
    default = {t.name: numpy_helper.to_array(t) for t in g.graph.initializer}["baseline"]
    assert default.shape == (1, 1, 1, 1) and not default.any()
    x = rng.normal(size=(3, 2, 6, 6)).astype(np.float32)
    w = rng.normal(size=(3, 5)).astype(np.float32)
    sess = make_session(g)
    default_run = sess.run(["attribution"], {"x": x, "target_weights": w})[0]
    zeros_run = sess.run(["attribution"], {"x": x, "target_weights": w, "baseline": np.zeros_like(x)})[0]
    np.testing.assert_array_equal(default_run, zeros_run)
    one = rng.normal(size=(1, 2, 6, 6)).astype(np.float32)  # one baseline for the whole batch
    np.testing.assert_allclose(
        sess.run(["attribution"], {"x": x, "target_weights": w, "baseline": one})[0],
        sess.run(["attribution"], {"x": x, "target_weights": w, "baseline": np.repeat(one, 3, axis=0)})[0],
        rtol=1e-6,
    )
    want, _ = numpy_deeplift_cnn(params, 2, 2, x.astype(np.float64), np.zeros(x.shape), w.astype(np.float64))
    np.testing.assert_allclose(default_run, want, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize(
    "name", ["resnet_ts13.onnx", "vit_ts17.onnx", "mobilenetv2_dynamo20.onnx", "densenet_ts17.onnx"]
)
def test_fixed_zero_baseline_is_folded_and_equals_the_zero_input(name):
    """The default graph holds the zero baseline as a constant of one item's shape: onnxruntime folds
    its forward copy at session start (the optimised graph runs no more Conv/MatMul/Gemm nodes than
    the gradient's), and the maps equal those of the graph with a baseline input fed zeros."""
    entry = next(e for e in MANIFEST if e["file"] == name)
    model = load_model(ZOO / name)
    shape = list(entry["input_shape"])
    if entry["dynamic_batch"]:
        shape[0] = 3
    x = np.random.default_rng(2).normal(size=shape).astype(np.float32)
    fixed = onnxplain.build(model, "deeplift")
    assert "baseline" not in {i.name for i in fixed.graph.input}
    with_input = onnxplain.build(model, "deeplift", onnxplain.Options(baseline_input=True))
    a = make_session(fixed).run(["attribution"], {entry["input"]: x})[0]
    b = make_session(with_input).run(["attribution"], {entry["input"]: x, "baseline": np.zeros_like(x)})[0]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(b).max())

    def linear_ops(graph, tmp):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        so.optimized_model_filepath = str(tmp)
        ort.InferenceSession(graph.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return sum(n.op_type in ("Conv", "MatMul", "Gemm") for n in onnx.load(str(tmp)).graph.node)

    import tempfile

    with tempfile.TemporaryDirectory() as d:
        tmp = pathlib.Path(d) / "opt.onnx"
        assert linear_ops(fixed, tmp) == linear_ops(onnxplain.build(model, "gradient"), tmp)
        assert linear_ops(with_input, tmp) > linear_ops(fixed, tmp)


@pytest.mark.parametrize("name", ["plain_cnn_dynamo18.onnx", "vit_dynamo18.onnx", "convnext_tanh_dynamo20.onnx"])
def test_explainer_fixed_batch_one_with_baseline(name):
    """Fixed batch 1: the baseline is a second forward copy, so the graph still takes [1, ...]; the
    Explainer feeds the baseline and loops over the items."""
    entry = next(e for e in MANIFEST if e["file"] == name)
    assert not entry["dynamic_batch"]
    model = load_model(ZOO / name)
    r = np.random.default_rng(8)
    x = r.normal(size=[3] + entry["input_shape"][1:]).astype(np.float32)
    base = (r.normal(size=[1] + entry["input_shape"][1:]) * 0.3).astype(np.float32)
    ex = Explainer(model)
    res = ex.run(x, "deeplift", target=[0, 3, 7], baseline=base)
    fwd = make_session(model)
    logits = np.concatenate([fwd.run([entry["output"]], {entry["input"]: x[i : i + 1]})[0] for i in range(3)])
    logits_b = fwd.run([entry["output"]], {entry["input"]: base})[0][0]
    want = logits[np.arange(3), [0, 3, 7]].astype(np.float64) - logits_b[[0, 3, 7]]
    got = res.attribution.reshape(3, -1).sum(axis=1, dtype=np.float64)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())
    # without a baseline: zeros
    zero = fwd.run([entry["output"]], {entry["input"]: np.zeros_like(base)})[0][0]
    got0 = ex.explain(x, "deeplift", target=[0, 3, 7]).reshape(3, -1).sum(axis=1, dtype=np.float64)
    want0 = logits[np.arange(3), [0, 3, 7]].astype(np.float64) - zero[[0, 3, 7]]
    np.testing.assert_allclose(got0, want0, rtol=1e-3, atol=1e-4 * np.abs(want0).max())


def test_rule_set_file_loads_and_lists_the_rules():
    from onnxplain.rules.ruleset import builtin_ruleset

    rs = builtin_ruleset("deeplift")
    rules = {e.rule for e in rs.entries}
    assert rules >= {
        "gradient",
        "rescale",
        "shapley_product",
        "extremum",
        "softmax",
        "standardize",
        "switch",
        "projection",
    }
    assert rs.entries[-1].rule == "projection"  # the catch-all comes last
