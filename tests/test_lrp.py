"""Layer-wise relevance propagation against slow numpy re-implementations of the papers.

* Per op: an affine op's matrix is probed from its *forward* model (f(e_j) - f(0)), and each rule
  is applied in its contribution form, R_j = sum_k z_jk / sum_j z_jk R_k (Bach et al. 2015;
  Montavon et al. 2017, 2019; Kohlbrenner et al. 2020). Nothing of the graph's VJPs is reused.
* Per network: small Conv/ReLU/MaxPool/AvgPool/Add/Gemm networks written with onnx.helper, whose
  layers the oracle turns into explicit matrices, against every rule and every shipped composite.
* Properties: LRP-0 equals input x gradient on ReLU networks (helper-built and zoo), LRP-0
  conserves the explained logit on bias-free networks, and every composite builds, passes the full
  checker and gives finite attributions on every zoo model.

Float64 graphs run in onnx.reference (tests/oracle.py); float32 graphs in onnxruntime.
"""

import functools
import json
import math
import pathlib
import zlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from oracle import X, case, run_ref, to_float64

import onnxplain
from onnxplain import OnnxplainError
from onnxplain.graph.load import load_model, opset_of
from onnxplain.io.resources import rules_dir
from onnxplain.methods.lrp import METHODS
from onnxplain.rules.ruleset import load_ruleset
from onnxplain.runtime.session import make_session

ZOO = pathlib.Path(__file__).parent / "zoo"
MANIFEST = json.loads((ZOO / "manifest.json").read_text())
ORT_MAX_OPSET = 25
rng = np.random.default_rng(11)


@pytest.fixture(autouse=True)
def _reseed(request):
    """Each test draws the same data whatever else runs."""
    global rng
    rng = np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


# ---- the papers' rules in contribution form -----------------------------------------------------


def stab(z, eps):
    """z + eps sign(z), sign(0) = +1."""
    return z + eps * np.where(z >= 0, 1.0, -1.0)


def spread(Z, denom, R):
    """R_j = sum_k Z[k, j] / denom[k] R[k]."""
    return (Z / denom[:, None] * R[:, None]).sum(0)


def rule_numpy(rule, x, mat, bias, R, p):
    """One weighted layer y = M(W) x + b(B) on the flattened x. ``mat(f)`` is the layer's matrix with
    weights f(W) (no bias); ``bias(f)`` its output bias with bias f(B)."""
    W = lambda v: v  # noqa: E731
    if rule == "epsilon":
        Z = mat(W) * x[None, :]
        return spread(Z, stab(Z.sum(1) + bias(W), p.get("epsilon", 1e-6)), R)
    if rule in ("zplus", "alpha_beta"):  # Bach et al. 2015 eq. 60 on z_jk = x_j w_jk; z+ = alpha 1 beta 0
        Z = mat(W) * x[None, :]
        P, N = np.maximum(Z, 0), np.minimum(Z, 0)
        a, b_ = (1.0, 0.0) if rule == "zplus" else (p.get("alpha", 2.0), p.get("beta", 1.0))
        return a * spread(P, stab(P.sum(1), 1e-6), R) - b_ * spread(N, stab(N.sum(1), 1e-6), R)
    if rule == "gamma":  # Montavon et al. 2019 eq. 10.4
        g = p.get("gamma", 0.25)
        mod = lambda v: v + g * np.maximum(v, 0)  # noqa: E731
        Z = mat(mod) * x[None, :]
        return spread(Z, stab(Z.sum(1) + bias(mod), 1e-6), R)
    if rule == "flat":  # Kohlbrenner et al. 2020
        Z = mat(np.ones_like)
        return spread(Z, stab(Z.sum(1), 1e-6), R)
    if rule == "wsquare":  # Montavon et al. 2017 sec. 4.1
        Z = mat(np.square)
        return spread(Z, stab(Z.sum(1), 1e-6), R)
    if rule == "zbox":  # Montavon et al. 2017 eq. 16
        lo, hi = p.get("low", 0.0), p.get("high", 1.0)
        Z = mat(W) * x[None, :] - mat(lambda v: np.maximum(v, 0)) * lo - mat(lambda v: np.minimum(v, 0)) * hi
        return spread(Z, stab(Z.sum(1), 1e-6), R)
    raise ValueError(rule)


def rules_file(tmp_path, entries, name="t"):
    """A rule-set file from [(match dict, rule, params)]."""
    lines = [f'name = "{name}"', 'description = "test"']
    for match, rule, params in entries:
        lines.append("[[rule]]")
        for k, v in {**match, "rule": rule, **params}.items():
            lines.append(f"{k} = {json.dumps(v)}")
    path = tmp_path / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def lrp64(model, x, rules=None, method="lrp_epsilon", target=None, weights=None, input="x0", output=None):
    """The float64 explanation graph of ``model`` in onnx.reference (a class target becomes one-hot
    weights: onnx.reference's OneHot rejects the graph's 1-D depth)."""
    m64 = to_float64(model)
    if target is not None:
        y = run_ref(m64, {input: x.astype(np.float64)})[output or model.graph.output[0].name]
        weights = np.eye(y.shape[1])[np.asarray(target)]
    opts = onnxplain.Options(input=input, output=output, rules=rules, target_mode="weights")
    g = onnxplain.build(m64, method, opts)
    return run_ref(g, {input: x.astype(np.float64), "target_weights": weights})["attribution"]


def lrp32(model, x, rules=None, method="lrp_epsilon", target=None, weights=None, input="x0", output=None):
    mode = "weights" if weights is not None else "class"
    opts = onnxplain.Options(input=input, output=output, rules=rules, target_mode=mode)
    g = onnxplain.build(model, method, opts)
    onnx.checker.check_model(g, full_check=True)
    feeds = {input: x.astype(np.float32)}
    if weights is not None:
        feeds["target_weights"] = weights.astype(np.float32)
    if target is not None:
        feeds["target"] = np.asarray(target, dtype=np.int64)
    return make_session(g).run(["attribution"], feeds)[0]


def rel(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / max(np.linalg.norm(b), 1e-300))


# ---- per op: probed matrices ------------------------------------------------------------------


def probe(c):
    """(M, f(0)) of the affine one-node model ``c`` (float64), by forwarding 0 and unit vectors."""
    m64, name = to_float64(c.model), c.wrt[0]
    x = c.feeds[name].astype(np.float64)
    f = lambda v: run_ref(m64, {name: v.reshape(x.shape)})[c.output].ravel()  # noqa: E731
    f0 = f(np.zeros(x.size))
    cols = [f(np.eye(x.size)[j]) - f0 for j in range(x.size)]
    return np.stack(cols, axis=1), f0


def arr(*shape, scale=1.0):
    return (rng.normal(size=shape) * scale).astype(np.float32)


# linear ops in their only on-path input x0: (id, case builder); each case has the explained x0
LINEAR = {
    "Conv": lambda: case(
        "Conv", X(arr(1, 4, 5, 5)), arr(6, 2, 3, 3), arr(6), pads=[1, 0, 1, 2], strides=[2, 1], group=2
    ),
    "ConvTranspose": lambda: case(
        "ConvTranspose", X(arr(1, 2, 3, 3)), arr(2, 3, 3, 3), arr(3), strides=[2, 2], pads=[1, 1, 0, 0]
    ),
    "Gemm": lambda: case("Gemm", X(arr(3, 5)), arr(4, 5), arr(4), transB=1, alpha=0.7, beta=1.3),
    "Gemm-xB": lambda: case("Gemm", arr(3, 5), X(arr(5, 4)), arr(1, 4)),
    "MatMul": lambda: case("MatMul", X(arr(2, 3, 5)), arr(5, 4)),
    "MatMul-Wx": lambda: case("MatMul", arr(4, 3), X(arr(2, 3, 5))),
    "Einsum": lambda: case("Einsum", X(arr(2, 5)), arr(5, 3), equation="ij,jk->ik"),
    "Add": lambda: case("Add", X(arr(2, 3, 4)), arr(3, 1)),
    "Sum": lambda: case("Sum", X(arr(2, 4)), arr(4), arr(2, 4)),
    "Sub": lambda: case("Sub", X(arr(2, 4)), arr(4)),
    "Sub-cx": lambda: case("Sub", arr(4), X(arr(2, 4))),
    "Mul": lambda: case("Mul", X(arr(2, 3, 4)), arr(3, 1)),
    "Div": lambda: case("Div", X(arr(2, 4)), np.array([2.0, -0.5, 4.0, 1.5], np.float32)),
    "Neg": lambda: case("Neg", X(arr(2, 4))),
    "AveragePool": lambda: case(
        "AveragePool", X(arr(1, 2, 5, 5)), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]
    ),
    "GlobalAveragePool": lambda: case("GlobalAveragePool", X(arr(2, 3, 3, 3))),
    "BatchNormalization": lambda: case(
        "BatchNormalization", X(arr(2, 3, 2, 2)), arr(3), arr(3), arr(3), np.abs(arr(3)) + 0.5
    ),
    "ReduceMean": lambda: case("ReduceMean", X(arr(2, 3, 4)), np.array([1], np.int64), opset=18),
    "ReduceSum": lambda: case("ReduceSum", X(arr(2, 3, 4)), np.array([2], np.int64), keepdims=0),
    "Pad": lambda: case("Pad", X(arr(1, 2, 3)), np.array([0, 1, 0, 0, 0, 2], np.int64), np.array(0.7, np.float32)),
    "Pad-reflect": lambda: case("Pad", X(arr(1, 2, 4)), np.array([0, 0, 2, 0, 0, 1], np.int64), mode="reflect"),
    "Resize": lambda: case("Resize", X(arr(1, 2, 3, 3)), None, np.array([1, 1, 2, 1.5], np.float32), mode="linear"),
}


@pytest.mark.parametrize("name", list(LINEAR))
def test_epsilon_matches_contributions_of_the_probed_matrix(name, tmp_path):
    """R_j = sum_k M_kj x_j / stab(z_k) R_k with z = M x + f(0): LRP-epsilon for any affine op."""
    c = LINEAR[name]()
    eps = 0.3
    path = rules_file(tmp_path, [({"ops": [c.op]}, "epsilon", {"epsilon": eps})])
    M, f0 = probe(c)
    xin = c.wrt[0]
    x = c.feeds[xin].astype(np.float64)
    z = M @ x.ravel() + f0
    w = rng.normal(size=z.size)
    want = spread(M * x.ravel()[None, :], stab(z, eps), w * z).reshape(x.shape)
    weights = w.reshape(run_ref(to_float64(c.model), {xin: x})[c.output].shape)
    got = lrp64(c.model, x, path, weights=weights, input=xin, output=c.output)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12 * np.abs(want).max())
    got32 = lrp32(c.model, x, path, weights=weights, input=xin, output=c.output)
    assert rel(got32, want) < 1e-4


def qarr(*shape):
    """Weights on a 1/8 grid: their modified forms (W+, 1.25 W, W^2) are exact in float32."""
    return (np.round(rng.normal(size=shape) * 8) / 8).astype(np.float32)


# weighted layers: (case builder from (W, B or None)), weight and bias
WEIGHTED = {
    "Conv": (
        lambda W, B: case("Conv", X(XS["Conv"]), W, *([B] if B is not None else []), pads=[1, 1, 0, 1], strides=[1, 2]),
        qarr(3, 2, 3, 3),
        qarr(3),
    ),
    "Conv-group": (
        lambda W, B: case(
            "Conv",
            X(XS["Conv-group"]),
            W,
            *([B] if B is not None else []),
            group=2,
            pads=[1, 1, 1, 1],
            dilations=[2, 1],
        ),
        qarr(4, 1, 2, 2),
        qarr(4),
    ),
    "ConvTranspose": (
        lambda W, B: case(
            "ConvTranspose",
            X(XS["ConvTranspose"]),
            W,
            *([B] if B is not None else []),
            strides=[2, 2],
            pads=[0, 1, 1, 0],
        ),
        qarr(2, 3, 2, 3),
        qarr(3),
    ),
    "Gemm": (
        lambda W, B: case("Gemm", X(XS["Gemm"]), W, *([B] if B is not None else []), transB=1, alpha=0.5, beta=2.0),
        qarr(4, 6),
        qarr(4),
    ),
    "Gemm-xB": (
        lambda W, B: case("Gemm", W, X(XS["Gemm-xB"]), *([B] if B is not None else []), transA=1),
        qarr(6, 3),
        qarr(3, 1),
    ),
    "MatMul": (lambda W, B: case("MatMul", X(XS["MatMul"]), W), qarr(5, 3), None),
    "MatMul-Wx": (lambda W, B: case("MatMul", W, X(XS["MatMul-Wx"])), qarr(3, 4), None),
}
XS = {
    "Conv": arr(2, 2, 4, 5),
    "Conv-group": arr(1, 2, 4, 4),
    "ConvTranspose": arr(1, 2, 3, 2),
    "Gemm": arr(3, 6),
    "Gemm-xB": arr(6, 2),
    "MatMul": arr(2, 3, 5),
    "MatMul-Wx": arr(4, 2),
}

RULES = [
    ("epsilon", {"epsilon": 0.1}),
    ("zplus", {}),
    ("alpha_beta", {"alpha": 2.0, "beta": 1.0}),
    ("alpha_beta", {"alpha": 1.0, "beta": 0.0}),
    ("gamma", {"gamma": 0.25}),
    ("flat", {}),
    ("wsquare", {}),
    ("zbox", {"low": -1.5, "high": 2.0}),
]


@functools.cache
def _probe_weighted(name, w_bytes, b_bytes):
    make, W, B = WEIGHTED[name]
    Wf = np.frombuffer(w_bytes, np.float32).reshape(W.shape)
    Bf = None if b_bytes is None else np.frombuffer(b_bytes, np.float32).reshape(B.shape)
    return probe(make(Wf, Bf))


@pytest.mark.parametrize("rule,params", RULES, ids=[f"{r}-{'-'.join(map(str, p.values()))}" for r, p in RULES])
@pytest.mark.parametrize("name", list(WEIGHTED))
def test_weighted_rule_matches_the_paper(name, rule, params, tmp_path):
    """Each rule's contribution form on the layer's probed matrices M(f(W)) (f(W) = W+, W^2, 1, ...)."""
    make, W, B = WEIGHTED[name]
    c = make(W, B)
    xin = c.wrt[0]
    x = c.feeds[xin].astype(np.float64)
    if rule == "zbox":
        x = np.clip(x, params["low"], params["high"])
    path = rules_file(tmp_path, [({"ops": [c.op]}, rule, params)])
    f32 = lambda f, v: np.ascontiguousarray(f(v.astype(np.float64)), dtype=np.float32)  # noqa: E731
    mat = lambda f: _probe_weighted(name, f32(f, W).tobytes(), None)[0]  # noqa: E731
    bias = lambda f: (
        0.0
        if B is None
        else _probe_weighted(  # noqa: E731
            name, f32(f, W).tobytes(), f32(f, B).tobytes()
        )[1]
    )
    M, f0 = _probe_weighted(name, W.tobytes(), None if B is None else B.tobytes())
    z = M @ x.ravel() + f0
    w = rng.normal(size=z.size)
    want = rule_numpy(rule, x.ravel(), mat, bias, w * z, params).reshape(x.shape)
    y_shape = run_ref(to_float64(c.model), {xin: x})[c.output].shape
    got = lrp64(c.model, x, path, weights=w.reshape(y_shape), input=xin, output=c.output)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12 * np.abs(want).max())
    assert rel(lrp32(c.model, x, path, weights=w.reshape(y_shape), input=xin, output=c.output), want) < 1e-4


# ---- per network: explicit layer matrices -------------------------------------------------------


def conv_matrix(W, in_shape, pads, stride):
    """The [out, in] matrix of a 2-D convolution of one [C, H, W] item (zero padding), by its definition."""
    C, H, Wd = in_shape
    O, _, kh, kw = W.shape  # noqa: E741
    pt, pl, pb, pr = pads
    Ho, Wo = (H + pt + pb - kh) // stride + 1, (Wd + pl + pr - kw) // stride + 1
    M = np.zeros((O * Ho * Wo, C * H * Wd))
    for o, c, i, j, a, e in np.ndindex(O, C, Ho, Wo, kh, kw):
        r, q = i * stride - pt + a, j * stride - pl + e
        if 0 <= r < H and 0 <= q < Wd:
            M[(o * Ho + i) * Wo + j, (c * H + r) * Wd + q] += W[o, c, a, e]
    return M, (O, Ho, Wo)


def pool_windows(in_shape, k, s):
    """[(output index, [input indices])] of a k x k, stride-s pool without padding, per channel."""
    C, H, Wd = in_shape
    Ho, Wo = (H - k) // s + 1, (Wd - k) // s + 1
    out = []
    for c, i, j in np.ndindex(C, Ho, Wo):
        taps = [(c * H + i * s + a) * Wd + j * s + e for a, e in np.ndindex(k, k)]
        out.append(((c * Ho + i) * Wo + j, taps))
    return out, (C, Ho, Wo)


class Net:
    """A small network written both as an ONNX model and as layers the numpy oracle understands."""

    def __init__(self, in_shape, batch=2):
        self.in_shape, self.batch = tuple(in_shape), batch
        self.nodes, self.inits, self.layers = [], [], []
        self.shapes = {"x0": self.in_shape}
        self.n = 0

    def _new(self, op):
        self.n += 1
        return f"{op.lower()}{self.n}"

    def _init(self, name, value):
        self.inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def conv(self, x, out_ch, k=3, pad=1, stride=1, bias=True):
        name = self._new("Conv")
        W = qarr(out_ch, self.shapes[x][0], k, k) / 2
        B = qarr(out_ch) / 4 if bias else np.zeros(out_ch, np.float32)
        ins = [x, self._init(name + ".W", W)] + ([self._init(name + ".B", B)] if bias else [])
        self.nodes.append(
            helper.make_node("Conv", ins, [name], name=name, pads=[pad] * 4, strides=[stride] * 2, kernel_shape=[k, k])
        )
        pads, s, in_shape = [pad] * 4, stride, self.shapes[x]
        mat = lambda f: conv_matrix(np.asarray(f(W.astype(np.float64))), in_shape, pads, s)[0]  # noqa: E731
        _, out_shape = conv_matrix(W, in_shape, pads, s)
        per = int(np.prod(out_shape[1:]))
        bvec = lambda f: np.repeat(np.asarray(f(B.astype(np.float64))), per)  # noqa: E731
        self.layers.append(("weighted", name, [x], dict(mat=mat, bias=bvec, first=x == "x0")))
        self.shapes[name] = out_shape
        return name

    def gemm(self, x, out, bias=True):
        name = self._new("Gemm")
        n_in = int(np.prod(self.shapes[x]))
        W = qarr(n_in, out) / 4
        B = qarr(out) / 4 if bias else np.zeros(out, np.float32)
        ins = [x, self._init(name + ".W", W)] + ([self._init(name + ".B", B)] if bias else [])
        self.nodes.append(helper.make_node("Gemm", ins, [name], name=name))
        mat = lambda f: np.asarray(f(W.astype(np.float64))).T  # noqa: E731
        bvec = lambda f: np.asarray(f(B.astype(np.float64)))  # noqa: E731
        self.layers.append(("weighted", name, [x], dict(mat=mat, bias=bvec, first=x == "x0")))
        self.shapes[name] = (out,)
        return name

    def relu(self, x):
        return self._simple("Relu", x, "pass", {}, self.shapes[x])

    def flatten(self, x):
        return self._simple("Flatten", x, "pass", {}, (int(np.prod(self.shapes[x])),))

    def maxpool(self, x, k=2, s=2):
        wins, shape = pool_windows(self.shapes[x], k, s)
        return self._simple("MaxPool", x, "maxpool", dict(windows=wins), shape, kernel_shape=[k, k], strides=[s, s])

    def avgpool(self, x, k=2, s=1):
        wins, shape = pool_windows(self.shapes[x], k, s)
        M = np.zeros((int(np.prod(shape)), int(np.prod(self.shapes[x]))))
        for o, taps in wins:
            M[o, taps] = 1.0 / len(taps)
        return self._simple("AveragePool", x, "linear", dict(M=M), shape, kernel_shape=[k, k], strides=[s, s])

    def add(self, a, b):
        name = self._new("Add")
        self.nodes.append(helper.make_node("Add", [a, b], [name], name=name))
        self.layers.append(("add", name, [a, b], {}))
        self.shapes[name] = self.shapes[a]
        return name

    def _simple(self, op, x, kind, params, shape, **attrs):
        name = self._new(op)
        self.nodes.append(helper.make_node(op, [x], [name], name=name, **attrs))
        self.layers.append((kind, name, [x], params))
        self.shapes[name] = shape
        return name

    def model(self, out):
        self.out = out
        g = helper.make_graph(
            self.nodes,
            "net",
            [helper.make_tensor_value_info("x0", TensorProto.FLOAT, [self.batch, *self.in_shape])],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, [self.batch, *self.shapes[out]])],
            self.inits,
        )
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)

    # -- the oracle -----------------------------------------------------------------------------
    def forward(self, x):
        """Activations of one item (flattened), by layer definitions."""
        a = {"x0": x.ravel()}
        for kind, name, ins, p in self.layers:
            v = a[ins[0]]
            if kind == "weighted":
                a[name] = p["mat"](lambda w: w) @ v + p["bias"](lambda w: w)
            elif kind == "pass":
                a[name] = np.maximum(v, 0) if name.startswith("relu") else v
            elif kind == "maxpool":
                a[name] = np.array([v[taps].max() for _, taps in p["windows"]])
            elif kind == "linear":
                a[name] = p["M"] @ v
            else:
                a[name] = v + a[ins[1]]
        return a

    def relevance(self, x, target, weighted_rule, first_rule=None, norm_eps=1e-6, layers_out=None):
        """LRP of one item: ``weighted_rule(layer) -> (rule, params)`` for Conv/Gemm, epsilon(norm_eps) for
        AvgPool and Add, pass for ReLU, winner-take-all for MaxPool. Returns R at x0 (and every layer's
        input relevance in ``layers_out``)."""
        a = self.forward(x)
        logits = a[self.out]
        R = {self.out: np.eye(logits.size)[target] * logits}
        for kind, name, ins, p in reversed(self.layers):
            r = R.pop(name)
            if layers_out is not None:
                layers_out.append((name, float(r.sum())))
            v = a[ins[0]]
            if kind == "weighted":
                rule, params = first_rule if (p["first"] and first_rule) else weighted_rule(name)
                out = [rule_numpy(rule, v, p["mat"], p["bias"], r, params)]
            elif kind == "pass":
                out = [r]
            elif kind == "maxpool":
                out = [np.zeros_like(v)]
                for o, taps in p["windows"]:
                    out[0][taps[int(np.argmax(v[taps]))]] += r[o]
            elif kind == "linear":
                out = [spread(p["M"] * v[None, :], stab(p["M"] @ v, norm_eps), r)]
            else:
                z = v + a[ins[1]]
                out = [v / stab(z, norm_eps) * r, a[ins[1]] / stab(z, norm_eps) * r]
            for t, rt in zip(ins, out):
                R[t] = R.get(t, 0) + rt
        return R["x0"].reshape(self.in_shape)


def cnn(bias=True, depth=3, batch=2):
    """x[2,6,6] -> conv-relu -> (conv-relu) + skip -> maxpool -> conv-relu -> avgpool -> flatten
    -> gemm-relu -> gemm. depth 1: conv-relu, maxpool, gemm; 2 adds the residual block, 3 the
    conv-relu-avgpool block, 4 the hidden gemm-relu."""
    net = Net((2, 6, 6), batch)
    h = net.relu(net.conv("x0", 4, bias=bias))
    if depth >= 2:
        h = net.add(h, net.relu(net.conv(h, 4, bias=bias)))
    h = net.maxpool(h)
    if depth >= 3:
        h = net.avgpool(net.relu(net.conv(h, 3, bias=bias)))
    h = net.flatten(h)
    if depth >= 4:
        h = net.relu(net.gemm(h, 6, bias=bias))
    out = net.gemm(h, 3, bias=bias)
    return net, net.model(out)


def numpy_lrp(net, x, targets, **kw):
    return np.stack([net.relevance(x[i].astype(np.float64), targets[i], **kw) for i in range(len(x))])


NET_RULES = RULES[:-1] + [("zbox", {"low": -1.5, "high": 2.0})]


@pytest.mark.parametrize("rule,params", NET_RULES, ids=[f"{r}-{'-'.join(map(str, p.values()))}" for r, p in NET_RULES])
def test_rule_on_a_cnn_matches_numpy(rule, params, tmp_path):
    """Conv/Gemm layers get ``rule`` (z^B: the first layer only, epsilon 0.1 elsewhere); Add and
    AveragePool epsilon 1e-6; ReLU passes; MaxPool routes to the first maximum."""
    net, m = cnn()
    x = np.clip(arr(2, 2, 6, 6), -1.5, 2.0)
    t = [1, 2]
    entries = [({"ops": ["Add", "AveragePool"]}, "epsilon", {"epsilon": 1e-6}), ({"ops": ["Relu"]}, "pass", {})]
    if rule == "zbox":
        entries = [
            ({"position": "first"}, rule, params),
            ({"ops": ["Conv", "Gemm"]}, "epsilon", {"epsilon": 0.1}),
        ] + entries
        want = numpy_lrp(net, x, t, weighted_rule=lambda n: ("epsilon", {"epsilon": 0.1}), first_rule=(rule, params))
    else:
        entries = [({"ops": ["Conv", "Gemm"]}, rule, params)] + entries
        want = numpy_lrp(net, x, t, weighted_rule=lambda n: (rule, params))
    path = rules_file(tmp_path, entries)
    got = lrp64(m, x, path, target=t)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12 * np.abs(want).max())
    assert rel(lrp32(m, x, path, target=t), want) < 1e-4


# shipped composites in the oracle's terms: (rule of the first layer, of other convs, of dense layers)
COMPOSITES = {
    "lrp_0": (None, ("epsilon", {"epsilon": 1e-9}), ("epsilon", {"epsilon": 1e-9}), 1e-9),
    "lrp_epsilon": (None, ("epsilon", {"epsilon": 0.25}), ("epsilon", {"epsilon": 0.25}), 1e-6),
    "lrp_epsilon_plus": (None, ("zplus", {}), ("epsilon", {"epsilon": 1e-6}), 1e-6),
    "lrp_epsilon_plus_flat": (("flat", {}), ("zplus", {}), ("epsilon", {"epsilon": 1e-6}), 1e-6),
    "lrp_epsilon_gamma_box": (
        ("zbox", {"low": 0.0, "high": 1.0}),
        ("gamma", {"gamma": 0.25}),
        ("epsilon", {"epsilon": 1e-6}),
        1e-6,
    ),
    "lrp_epsilon_alpha2_beta1": (
        None,
        ("alpha_beta", {"alpha": 2.0, "beta": 1.0}),
        ("epsilon", {"epsilon": 1e-6}),
        1e-6,
    ),
}


def test_composites_cover_the_heads():
    assert set(COMPOSITES) == set(METHODS)


@pytest.mark.parametrize("method", list(COMPOSITES))
def test_shipped_composite_matches_numpy(method):
    first, conv, dense, norm = COMPOSITES[method]
    net, m = cnn(depth=4)
    x = rng.uniform(0, 1, size=(2, 2, 6, 6)).astype(np.float32)
    t = [0, 2]
    want = numpy_lrp(
        net, x, t, weighted_rule=lambda n: conv if n.startswith("conv") else dense, first_rule=first, norm_eps=norm
    )
    got = lrp64(m, x, method=method, target=t)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12 * np.abs(want).max())
    got32 = onnxplain.Explainer(m).explain(x, method, target=np.array(t))
    assert rel(got32, want) < 1e-4


def test_alpha_beta_needs_alpha_minus_beta_one(tmp_path):
    net, m = cnn(depth=1)
    path = rules_file(tmp_path, [({"ops": ["Conv"]}, "alpha_beta", {"alpha": 2.0, "beta": 0.5})])
    with pytest.raises(OnnxplainError, match="alpha - beta = 1"):
        onnxplain.build(m, "lrp_epsilon", onnxplain.Options(rules=path))


def test_shipped_lrp_rule_sets_load():
    for method in METHODS:
        rs = load_ruleset(pathlib.Path(rules_dir()) / f"{method}.toml")
        assert rs.name == method and rs.description


# ---- properties ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_lrp0_is_input_times_gradient_on_relu_nets(depth, bias):
    """LRP-0 on ReLU networks with max/average pools and residual sums is x * gradient: the
    relevance of a unit is a_k times the backward signal, and a_k / z_k = relu'(z_k)."""
    net, m = cnn(bias=bias, depth=depth)
    x = arr(2, 2, 6, 6)
    t = [2, 0]
    got = lrp64(m, x, method="lrp_0", target=t)
    g = onnxplain.build(to_float64(m), "input_x_gradient", onnxplain.Options(target_mode="weights"))
    ixg = run_ref(g, {"x0": x.astype(np.float64), "target_weights": np.eye(3)[t]})["attribution"]
    assert rel(got, ixg) < 1e-5  # the 1e-9 stabiliser: relative error eps / |z|


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_lrp0_conserves_the_logit_on_bias_free_nets(depth):
    net, m = cnn(bias=False, depth=depth)
    x = arr(2, 2, 6, 6)
    t = [1, 2]
    got = lrp64(m, x, method="lrp_0", target=t)
    logits = run_ref(to_float64(m), {"x0": x.astype(np.float64)})[net.out]
    np.testing.assert_allclose(got.sum(axis=(1, 2, 3)), logits[[0, 1], t], rtol=1e-7)


def test_numpy_oracle_conserves_layer_by_layer():
    """The oracle itself: with LRP-0 on a bias-free net the relevance of every layer's output sums to
    the logit, except inside the residual branch (conv3, relu4), which holds a share of it."""
    net, _ = cnn(bias=False, depth=4)
    x = arr(2, 6, 6).astype(np.float64)
    sums = []
    net.relevance(x, 1, weighted_rule=lambda n: ("epsilon", {"epsilon": 1e-12}), norm_eps=1e-12, layers_out=sums)
    logit = net.forward(x)[net.out][1]
    checked = [(name, s) for name, s in sums if name not in ("conv3", "relu4")]
    assert len(checked) == 11
    for name, s in checked:
        assert abs(s - logit) < 1e-9 * max(1.0, abs(logit)), (name, s, logit)


# ---- products of activations and normalisation -------------------------------------------------


def _mlp_with(kind):
    """x[2,4] -> Gemm -> z[2,5] -> (a product involving z) -> m -> Gemm -> logits[2,3]."""
    W1, B1, W2, B2, W3, B3 = arr(4, 5), arr(5), arr(5, 3), arr(3), arr(4, 5), arr(5)
    inits = [
        numpy_helper.from_array(v, n)
        for v, n in [
            (W1, "W1"),
            (B1, "B1"),
            (W2, "W2"),
            (B2, "B2"),
            (W3, "W3"),
            (B3, "B3"),
            (np.array(1.4142135, np.float32), "sqrt2"),
            (np.array(1, np.float32), "one"),
            (np.array(0.5, np.float32), "half"),
        ]
    ]
    nodes = [helper.make_node("Gemm", ["x0", "W1", "B1"], ["z"])]
    if kind in ("silu", "silu_swapped"):
        nodes.append(helper.make_node("Sigmoid", ["z"], ["gate"]))
        nodes.append(helper.make_node("Mul", ["z", "gate"] if kind == "silu" else ["gate", "z"], ["m"]))
    elif kind == "gelu":  # z * (0.5 * (1 + erf(z / sqrt 2))), as torch exports it
        nodes += [
            helper.make_node("Div", ["z", "sqrt2"], ["d"]),
            helper.make_node("Erf", ["d"], ["e"]),
            helper.make_node("Add", ["e", "one"], ["a"]),
            helper.make_node("Mul", ["half", "a"], ["gate"]),
            helper.make_node("Mul", ["z", "gate"], ["m"]),
        ]
    else:  # two plain branches
        nodes += [helper.make_node("Gemm", ["x0", "W3", "B3"], ["z2"]), helper.make_node("Mul", ["z", "z2"], ["m"])]
    nodes.append(helper.make_node("Gemm", ["m", "W2", "B2"], ["logits"]))
    g = helper.make_graph(
        nodes,
        "gated",
        [helper.make_tensor_value_info("x0", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [2, 3])],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), (W1, B1, W2, B2, W3, B3)


def _eps_dense(x, W, b, R, eps=1e-9):
    Z = W.T * x[None, :]
    return spread(Z, stab(Z.sum(1) + b, eps), R)


@pytest.mark.parametrize("kind", ["silu", "silu_swapped", "gelu", "plain"])
def test_products_freeze_the_gate_or_split(kind):
    """A Sigmoid (or erf) gate is a constant weight: the other factor takes R_m * m / stab(m); two
    plain factors take half each."""
    m, (W1, B1, W2, B2, W3, B3) = _mlp_with(kind)
    x = arr(2, 4).astype(np.float64)
    t = [0, 2]
    want = []
    for i in range(2):
        z, z2 = x[i] @ W1 + B1, x[i] @ W3 + B3
        if kind == "plain":
            gate = z2
        elif kind == "gelu":
            gate = 0.5 * (1 + np.vectorize(math.erf)(z / np.float64(np.float32(1.4142135))))
        else:
            gate = 1 / (1 + np.exp(-z))
        mm = z * gate
        y = mm @ W2 + B2
        R_m = _eps_dense(mm, W2, B2, np.eye(3)[t[i]] * y)
        share = 0.5 if kind == "plain" else 1.0
        R_z = share * mm / stab(mm, 1e-9) * R_m
        r = _eps_dense(x[i], W1, B1, R_z)
        if kind == "plain":
            r = r + _eps_dense(x[i], W3, B3, R_z)
        want.append(r)
    got = lrp64(m, x, method="lrp_0", target=t, output="logits")
    np.testing.assert_allclose(got, np.stack(want), rtol=1e-7, atol=1e-10)


def test_attention_freezes_the_softmax():
    """o = softmax(q k^T) v: relevance reaches x through v only (Ali et al. 2022's AH-rule)."""
    Wq, Wk, Wv, Wo = arr(4, 4), arr(4, 4), arr(4, 4), arr(4, 3)
    inits = [
        numpy_helper.from_array(v, n)
        for v, n in [(Wq, "Wq"), (Wk, "Wk"), (Wv, "Wv"), (Wo, "Wo"), (np.array([1], np.int64), "ax")]
    ]
    nodes = [
        helper.make_node("MatMul", ["x0", "Wq"], ["q"]),
        helper.make_node("MatMul", ["x0", "Wk"], ["k"]),
        helper.make_node("MatMul", ["x0", "Wv"], ["v"]),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["s"]),
        helper.make_node("Softmax", ["s"], ["a"], axis=-1),
        helper.make_node("MatMul", ["a", "v"], ["o"]),
        helper.make_node("ReduceMean", ["o", "ax"], ["p"], keepdims=0),
        helper.make_node("Gemm", ["p", "Wo"], ["logits"]),
    ]
    g = helper.make_graph(
        nodes,
        "attn",
        [helper.make_tensor_value_info("x0", TensorProto.FLOAT, [1, 3, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    x = arr(1, 3, 4).astype(np.float64)[0]
    q, k, v = x @ Wq, x @ Wk, x @ Wv
    s = q @ k.T
    a = np.exp(s - s.max(1, keepdims=True))
    a /= a.sum(1, keepdims=True)
    o = a @ v
    p = o.mean(0)
    y = p @ Wo
    R_p = _eps_dense(p, Wo, 0.0, np.eye(3)[1] * y)
    R_o = o / 3 / stab(p, 1e-9)[None, :] * R_p[None, :]  # the mean: contributions o[t, c] / 3
    R_v = np.zeros_like(v)
    for t_, s_, c in np.ndindex(3, 3, 4):  # o[t, c] = sum_s a[t, s] v[s, c]
        R_v[s_, c] += a[t_, s_] * v[s_, c] / stab(o[t_, c], 1e-9) * R_o[t_, c]
    want = np.stack([_eps_dense(x[r], Wv, 0.0, R_v[r]) for r in range(3)])[None]
    got = lrp64(m, x[None], method="lrp_0", target=[1], output="logits")
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("op", ["LayerNormalization", "InstanceNormalization"])
def test_normalisation_with_frozen_statistics(op, tmp_path):
    """y = scale (x - mean) / sigma + bias with sigma held fixed is linear in x: epsilon on its matrix."""
    if op == "LayerNormalization":
        x, scale, bias = arr(2, 5), arr(5), arr(5)
        c = case(op, X(x), scale, bias, axis=-1, epsilon=1e-3)
        groups = [(np.s_[i, :], scale) for i in range(2)]
    else:
        x, scale, bias = arr(1, 2, 2, 3), arr(2), arr(2)
        c = case(op, X(x), scale, bias, epsilon=1e-3)
        groups = [(np.s_[0, ch], scale[ch]) for ch in range(2)]
    x64 = x.astype(np.float64)
    y = run_ref(to_float64(c.model), {"x0": x64})[c.output]
    w = rng.normal(size=y.shape)
    want = np.zeros_like(x64)
    for sl, sc in groups:
        xv, yv, R = x64[sl].ravel(), y[sl].ravel(), (w * y)[sl].ravel()
        n = xv.size
        inv = 1 / np.sqrt(xv.var() + 1e-3)
        M = (np.eye(n) - 1.0 / n) * inv * np.broadcast_to(np.asarray(sc, np.float64), (n,))[:, None]
        want[sl] = spread(M * xv[None, :], stab(yv, 0.1), R).reshape(x64[sl].shape)
    path = rules_file(tmp_path, [({"ops": [op]}, "epsilon", {"epsilon": 0.1})])
    got = lrp64(c.model, x, path, weights=w, output=c.output)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


# ---- the zoo -----------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", MANIFEST, ids=[e["file"] for e in MANIFEST])
def test_every_composite_runs_on_the_zoo(entry):
    model = load_model(ZOO / entry["file"])
    x = np.random.default_rng(5).normal(size=entry["input_shape"]).astype(np.float32)
    for method in METHODS:
        g = onnxplain.build(model, method)
        onnx.checker.check_model(g, full_check=True)
        if opset_of(model) <= ORT_MAX_OPSET:
            a = make_session(g).run(["attribution"], {entry["input"]: x})[0]
        else:  # onnxruntime 1.31 stops at opset 25: run the float64 graph in onnx.reference
            a = lrp64(model, x, method=method, target=[0] * x.shape[0], input=entry["input"], output=entry["output"])
        assert a.shape == x.shape and np.isfinite(a).all() and np.abs(a).max() > 0, method


RELU_ZOO = [e for e in MANIFEST if e["family"] in ("plain_cnn", "resnet", "densenet", "segnet")]


@pytest.mark.parametrize("entry", RELU_ZOO, ids=[e["file"] for e in RELU_ZOO])
def test_lrp0_is_input_times_gradient_on_zoo_relu_models(entry):
    """Exported ReLU CNNs (BatchNormalization folded or standalone, max/average pools, residual sums,
    concatenation, transposed convolution, resizing): LRP-0 is x * gradient."""
    m64 = to_float64(load_model(ZOO / entry["file"]))
    x = np.random.default_rng(5).normal(size=entry["input_shape"])
    y = run_ref(m64, {entry["input"]: x})[entry["output"]]
    w = np.random.default_rng(6).normal(size=y.shape)
    opts = onnxplain.Options(target_mode="weights", output=entry["output"])
    feeds = {entry["input"]: x, "target_weights": w}
    lrp = run_ref(onnxplain.build(m64, "lrp_0", opts), feeds)["attribution"]
    ixg = run_ref(onnxplain.build(m64, "input_x_gradient", opts), feeds)["attribution"]
    assert rel(lrp, ixg) < 1e-4
