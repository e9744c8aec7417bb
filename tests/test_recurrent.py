"""Oracle tests for the LSTM/GRU/RNN VJPs (onnxplain/rules/vjp/recurrent.py).

onnx.reference's LSTM/GRU/RNN ignore sequence_lens, clip, input_forget and every activation but the
defaults, so the float64 oracle runs the numpy forward of ``rnn_reference`` (from the spec), which is
first checked against onnxruntime's forward over a grid of attributes. Finite differences of that
forward are then compared with the exported gradient graph (run in float64 by onnx.reference), and the
float32 graph is run in onnxruntime, except for layout=1, which onnxruntime's CPU kernels refuse.
"""

import itertools
import json
import pathlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from oracle import F32, Case, X, assert_case, case, gradient_graph, run_ref, to_float64
from rnn_reference import GRUByDefinition, LSTMByDefinition, RNNByDefinition

from onnxplain import Explainer
from onnxplain.errors import OnnxplainError

r = np.random.default_rng(7)
n = r.normal
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
REFERENCE = [LSTMByDefinition, GRUByDefinition, RNNByDefinition]


def rnn_args(
    op,
    direction="forward",
    *,
    T=4,
    B=2,
    I=3,  # noqa: E741
    H=3,
    h0=True,
    c0=True,
    lens=None,
    peep=False,
    layout=0,
    const_x=False,
    bias=True,
    scale=0.6,
):
    """Positional arguments of :func:`oracle.case` for one recurrent node: X, W, R, B, sequence_lens,
    initial_h[, initial_c, P]; ``X(...)`` marks the differentiated ones."""
    D, G = (2 if direction == "bidirectional" else 1), GATES[op]
    x = n(size=(B, T, I) if layout else (T, B, I))
    state = (B, D, H) if layout else (D, B, H)
    args = [
        x if const_x else X(x),
        n(size=(D, G * H, I)) * scale,
        n(size=(D, G * H, H)) * scale,
        n(size=(D, 2 * G * H)) * 0.5 if bias else None,
        None if lens is None else np.array(lens, np.int32),
        X(n(size=state)) if h0 else None,
    ]
    if op == "LSTM":
        args += [X(n(size=state)) if c0 else None, n(size=(D, 3 * H)) * 0.5 if peep else None]
    while args[-1] is None:
        args.pop()
    return args


def rc(
    op,
    direction="forward",
    *,
    id,
    output=0,
    opset=14,
    dims=None,
    ort=True,
    layout=0,
    T=4,
    B=2,
    I=3,  # noqa: E741
    H=3,
    h0=True,
    c0=True,
    lens=None,
    peep=False,
    const_x=False,
    bias=True,
    **attrs,
):
    args = rnn_args(
        op, direction, T=T, B=B, I=I, H=H, h0=h0, c0=c0, lens=lens, peep=peep, layout=layout, const_x=const_x, bias=bias
    )
    if layout:
        attrs["layout"] = 1
    return case(
        op,
        *args,
        outputs=3 if op == "LSTM" else 2,
        output=output,
        opset=opset,
        dims=dims,
        ort=ort,
        id=id,
        hidden_size=H,
        direction=direction,
        **attrs,
    )


def combined(op, direction, *, id, lens=None, **attrs):
    """One node whose Y, Y_h (and Y_c) all reach the output: out = sum_t Y + Y_h (+ Y_c^2)."""
    c = rc(op, direction, id=id, lens=lens, **attrs)
    m = c.model
    g = m.graph
    del g.output[:]
    ys = list(g.node[0].output)
    g.initializer.append(numpy_helper.from_array(np.array([0], np.int64), "axis0"))
    g.node.extend(
        [
            helper.make_node("ReduceSum", [ys[0], "axis0"], ["ysum"], keepdims=0),
            helper.make_node("Add", ["ysum", ys[1]], ["out" if op != "LSTM" else "partial"]),
        ]
    )
    if op == "LSTM":
        g.node.extend(
            [helper.make_node("Mul", [ys[2], ys[2]], ["csq"]), helper.make_node("Add", ["partial", "csq"], ["out"])]
        )
    g.output.append(helper.make_tensor_value_info("out", F32, None))
    m = onnx.shape_inference.infer_shapes(m, strict_mode=True)
    return Case(op, m, c.feeds, c.wrt, "out", id)


LSTM_ACTS = [
    ["Relu", "Softsign", "Elu"],
    ["HardSigmoid", "ScaledTanh", "Softplus"],
    ["Sigmoid", "Affine", "LeakyRelu"],
    ["Sigmoid", "ThresholdedRelu", "Tanh"],
]
ALPHA, BETA = [0.3, 0.7, 0.2, 0.9, 0.1, 0.6], [0.4, 0.8, 0.5, 0.2]

CASES = [
    # RNN
    rc("RNN", id="rnn-forward"),
    rc("RNN", "reverse", h0=False, lens=[4, 1], id="rnn-reverse-lens-no-h0"),
    rc("RNN", "bidirectional", lens=[3, 4], activations=["Relu", "Softsign"], id="rnn-bidi-lens-relu-softsign"),
    rc("RNN", activations=["Affine"], activation_alpha=[0.9], activation_beta=[0.2], clip=1.5, id="rnn-affine-clip"),
    rc("RNN", activations=["ScaledTanh"], activation_alpha=[1.3], activation_beta=[0.7], id="rnn-scaledtanh"),
    rc("RNN", "reverse", activations=["LeakyRelu"], activation_alpha=[0.2], lens=[2, 4], id="rnn-leakyrelu-lens"),
    rc("RNN", activations=["Elu"], activation_alpha=[0.5], id="rnn-elu"),
    rc("RNN", activations=["HardSigmoid"], activation_alpha=[0.3], activation_beta=[0.45], id="rnn-hardsigmoid"),
    rc("RNN", activations=["Softplus"], id="rnn-softplus"),
    rc("RNN", activations=["Sigmoid"], clip=0.8, id="rnn-sigmoid-clip"),
    rc("RNN", activations=["ThresholdedRelu"], activation_alpha=[0.1], id="rnn-thresholdedrelu"),
    rc("RNN", "bidirectional", layout=1, lens=[4, 2], ort=False, id="rnn-bidi-layout1"),
    rc("RNN", h0=False, dims={"x0": [4, "N", 3]}, id="rnn-symbolic-batch"),
    rc("RNN", opset=11, lens=[3, 4], id="rnn-opset11"),
    rc("RNN", "bidirectional", bias=False, id="rnn-bidi-no-bias"),
    # GRU
    rc("GRU", id="gru-forward"),
    rc("GRU", linear_before_reset=1, lens=[4, 2], id="gru-lbr-lens"),
    rc("GRU", "reverse", h0=False, linear_before_reset=1, id="gru-reverse-lbr-no-h0"),
    rc("GRU", "bidirectional", lens=[1, 4], id="gru-bidi-lens"),
    rc(
        "GRU",
        "bidirectional",
        linear_before_reset=1,
        activations=["HardSigmoid", "Softsign", "Sigmoid", "LeakyRelu"],
        activation_alpha=ALPHA[:2],
        activation_beta=BETA[:1],
        id="gru-bidi-lbr-acts",
    ),
    rc(
        "GRU",
        activations=["Affine", "ScaledTanh"],
        activation_alpha=[0.5, 1.2],
        activation_beta=[0.5, 0.8],
        id="gru-affine-scaledtanh",
    ),
    rc(
        "GRU",
        activations=["Sigmoid", "Elu"],
        activation_alpha=[0.7],
        clip=1.2,
        linear_before_reset=1,
        id="gru-elu-clip-lbr",
    ),
    rc("GRU", "reverse", activations=["Softplus", "Relu"], clip=2.0, lens=[3, 4], id="gru-softplus-relu-clip"),
    rc("GRU", activations=["Sigmoid", "ThresholdedRelu"], activation_alpha=[0.15], id="gru-thresholdedrelu"),
    rc("GRU", layout=1, linear_before_reset=1, lens=[2, 4], ort=False, id="gru-layout1-lbr"),
    rc("GRU", const_x=True, id="gru-initial-h-only"),
    rc("GRU", opset=11, linear_before_reset=1, id="gru-opset11-lbr"),
    rc("GRU", bias=False, id="gru-no-bias"),
    rc("GRU", "bidirectional", bias=False, linear_before_reset=1, id="gru-bidi-lbr-no-bias"),
    rc("GRU", h0=False, dims={"x0": [4, "N", 3]}, linear_before_reset=1, id="gru-symbolic-batch"),
    # LSTM
    rc("LSTM", id="lstm-forward"),
    rc("LSTM", h0=False, c0=False, id="lstm-no-initial-states"),
    rc("LSTM", output=1, id="lstm-y_h"),
    rc("LSTM", output=2, id="lstm-y_c"),
    rc("LSTM", "reverse", lens=[4, 2], id="lstm-reverse-lens"),
    rc("LSTM", "reverse", output=2, lens=[3, 1], peep=True, id="lstm-reverse-y_c-lens-peepholes"),
    rc("LSTM", "bidirectional", lens=[2, 4], peep=True, id="lstm-bidi-lens-peepholes"),
    rc("LSTM", input_forget=1, peep=True, id="lstm-input-forget-peepholes"),
    rc("LSTM", "bidirectional", input_forget=1, output=1, id="lstm-bidi-input-forget-y_h"),
    rc("LSTM", "bidirectional", clip=0.9, h0=False, id="lstm-bidi-clip"),
    rc("LSTM", lens=[0, 3], output=1, id="lstm-zero-length-y_h"),
    rc("LSTM", "reverse", lens=[4, 0], output=2, id="lstm-reverse-zero-length-y_c"),
    *[
        rc(
            "LSTM",
            activations=a,
            activation_alpha=ALPHA,
            activation_beta=BETA,
            clip=c,
            id=f"lstm-{'-'.join(a).lower()}",
        )
        for a, c in zip(LSTM_ACTS, [None, 1.5, None, 2.0])
    ],
    rc(
        "LSTM",
        "bidirectional",
        activations=LSTM_ACTS[0] + LSTM_ACTS[2],
        activation_alpha=ALPHA,
        lens=[4, 3],
        id="lstm-bidi-acts-per-direction",
    ),
    rc("LSTM", "bidirectional", layout=1, lens=[3, 4], peep=True, ort=False, id="lstm-bidi-layout1-peepholes"),
    rc("LSTM", layout=1, output=2, ort=False, id="lstm-layout1-y_c"),
    rc("LSTM", const_x=True, id="lstm-initial-states-only"),
    rc("LSTM", opset=22, lens=[4, 3], id="lstm-opset22"),
    rc("LSTM", opset=11, h0=False, c0=False, id="lstm-opset11"),
    rc("LSTM", bias=False, peep=True, lens=[2, 4], id="lstm-no-bias-peepholes"),
    rc("LSTM", "bidirectional", h0=False, c0=False, dims={"x0": [4, "N", 3]}, id="lstm-bidi-symbolic-batch"),
    rc("LSTM", T=9, B=3, I=5, H=4, lens=[9, 5, 7], id="lstm-longer"),
    # every output used at once
    combined("RNN", "bidirectional", lens=[4, 2], id="rnn-bidi-y-and-y_h"),
    combined("GRU", "reverse", linear_before_reset=1, id="gru-reverse-y-and-y_h"),
    combined("LSTM", "forward", lens=[3, 4], peep=True, id="lstm-y-y_h-y_c"),
    combined("LSTM", "bidirectional", lens=[4, 1], id="lstm-bidi-y-y_h-y_c"),
]


@pytest.mark.parametrize("c", CASES, ids=repr)
def test_vjp(c):
    assert_case(c)


def test_symbolic_sequence_length_is_refused():
    c = rc("LSTM", dims={"x0": ["T", 2, 3]}, id="lstm-symbolic-T")
    with pytest.raises(OnnxplainError, match=r"^LSTM 'LSTM_0': the sequence length of 'x0' is not static") as e:
        gradient_graph(c.model, "x0", c.output)
    assert "\n" not in str(e.value)


def test_activation_count_is_checked():
    c = rc("GRU", "bidirectional", activations=["Sigmoid", "Tanh"], id="gru-two-activations")
    with pytest.raises(OnnxplainError, match=r"^GRU 'GRU_0': activations .* must name 4 functions"):
        gradient_graph(c.model, "x0", c.output)


# ---- the numpy oracle is itself checked against onnxruntime's forward ----------------------------------

ORT_GRID = {
    "LSTM": [
        None,
        ["Relu", "Softsign", "Elu", "Sigmoid", "Tanh", "Softplus"],
        ["HardSigmoid", "ScaledTanh", "LeakyRelu", "Affine", "ThresholdedRelu", "Tanh"],
    ],
    "GRU": [
        None,
        ["HardSigmoid", "Softsign", "Sigmoid", "LeakyRelu"],
        ["Affine", "ScaledTanh", "Elu", "ThresholdedRelu"],
    ],
    "RNN": [
        None,
        ["Relu", "Softsign"],
        ["ScaledTanh", "Affine"],
        ["LeakyRelu", "ThresholdedRelu"],
        ["Elu", "HardSigmoid"],
        ["Softplus", "Sigmoid"],
    ],
}


def _forward_grid():
    for op, acts in ORT_GRID.items():
        for direction, lens, act, clip, extra in itertools.product(
            ["forward", "reverse", "bidirectional"], [None, [3, 5, 0]], acts, [None, 1.1], [0, 1]
        ):
            yield op, direction, lens, act, clip, extra


def _all_outputs(c):
    m = c.model
    del m.graph.output[:]
    m.graph.output.extend([helper.make_tensor_value_info(o, F32, None) for o in m.graph.node[0].output])
    return m


@pytest.mark.parametrize("op,direction,lens,act,clip,extra", list(_forward_grid()))
def test_reference_matches_onnxruntime(op, direction, lens, act, clip, extra):
    """rnn_reference follows onnxruntime's forward: sequence_lens (including 0), clip, input_forget,
    peepholes, linear_before_reset and every activation with alpha/beta."""
    dirs = 2 if direction == "bidirectional" else 1
    attrs = {}
    if act is not None:
        k = {"LSTM": 3, "GRU": 2, "RNN": 1}[op] * dirs
        attrs.update(activations=act[:k], activation_alpha=ALPHA, activation_beta=BETA)
    if clip is not None:
        attrs["clip"] = clip
    if op == "GRU":
        attrs["linear_before_reset"] = extra
    if op == "LSTM":
        attrs["input_forget"] = extra
    c = rc(op, direction, T=5, B=3, lens=lens, peep=bool(extra), id="fwd", **attrs)
    m = _all_outputs(c)
    got = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, c.feeds)
    f64 = {k: v.astype(np.float64) for k, v in c.feeds.items()}
    want = ReferenceEvaluator(to_float64(m), new_ops=REFERENCE).run(None, f64)
    for a, b in zip(got, want):
        assert np.abs(a - b).max() <= 1e-5 * max(1.0, np.abs(b).max())


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_reference_layout1_matches_onnx_reference(op, direction):
    """With default attributes, rnn_reference at layout=1 agrees with onnx.reference's own operators
    (onnxruntime refuses layout=1)."""
    c = rc(op, direction, layout=1, id="layout1")
    m = to_float64(_all_outputs(c))
    f64 = {k: v.astype(np.float64) for k, v in c.feeds.items()}
    want = ReferenceEvaluator(m).run(None, f64)
    got = ReferenceEvaluator(m, new_ops=REFERENCE).run(None, f64)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


# ---- whole recurrent models from the zoo, through the Python API ------------------------------------

ZOO = pathlib.Path(__file__).parent / "zoo"
RECURRENT_ZOO = [e for e in json.loads((ZOO / "manifest.json").read_text()) if e["family"] == "recurrent"]


def _explained_f64(path, name):
    """The float64 model with the explained tensor ``name`` added to its outputs."""
    m64 = to_float64(onnx.load(str(path)))
    m64.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.DOUBLE, None))
    return m64


def test_recurrent_zoo_has_each_op():
    ops = {n.op_type for e in RECURRENT_ZOO for n in onnx.load(str(ZOO / e["file"])).graph.node}
    assert {"LSTM", "GRU", "RNN"} <= ops


@pytest.mark.parametrize("entry", RECURRENT_ZOO, ids=[e["file"] for e in RECURRENT_ZOO])
def test_explainer_gradient_matches_finite_differences(entry):
    """Explainer(path).explain(x, "gradient", target_weights=w) is the gradient of sum(w * logits), checked
    against float64 central differences of the model (run by the spec-following reference)."""
    path = ZOO / entry["file"]
    rng = np.random.default_rng(11)
    x = rng.normal(size=entry["input_shape"]).astype(np.float32)
    ex = Explainer(str(path))
    meta = {p.key: p.value for p in ex.graph("gradient", "weights").metadata_props}
    m64 = _explained_f64(path, meta["onnxplain.explained"])
    name = entry["input"]

    def logits(v):
        return run_ref(m64, {name: v})[meta["onnxplain.explained"]]

    x64 = x.astype(np.float64)
    w = rng.normal(size=logits(x64).shape)
    attribution = ex.explain(x, method="gradient", target_weights=w.astype(np.float32))
    assert attribution.shape == x.shape
    h = 1e-6
    us = [rng.normal(size=x.shape) for _ in range(6)]
    fd = np.array([np.sum(w * (logits(x64 + h * u) - logits(x64 - h * u))) / (2 * h) for u in us])
    an = np.array([np.sum(attribution * u) for u in us])
    err = np.linalg.norm(an - fd) / np.linalg.norm(fd)
    assert err <= 1e-4, f"{entry['file']}: float32 explanation vs float64 finite differences: {err:.2e}"


@pytest.mark.parametrize("entry", RECURRENT_ZOO, ids=[e["file"] for e in RECURRENT_ZOO])
def test_explainer_default_target_is_the_argmax_class(entry):
    """Without a target, the explained class is the argmax of the logits (summed over the time axis of
    per-timestep logits): the same attribution as a one-hot seed on it at every time step."""
    path = ZOO / entry["file"]
    x = np.random.default_rng(5).normal(size=entry["input_shape"]).astype(np.float32)
    ex = Explainer(str(path))
    meta = {p.key: p.value for p in ex.graph("gradient", "weights").metadata_props}
    logits = run_ref(_explained_f64(path, meta["onnxplain.explained"]), {entry["input"]: x.astype(np.float64)})[
        meta["onnxplain.explained"]
    ]
    scores = logits.sum(axis=tuple(range(1, logits.ndim - 1)))
    onehot = np.broadcast_to(
        np.eye(logits.shape[-1])[scores.argmax(-1)].reshape([len(x)] + [1] * (logits.ndim - 2) + [-1]), logits.shape
    ).astype(np.float32)
    got = ex.explain(x, method="gradient")
    want = ex.explain(x, method="gradient", target_weights=onehot)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.abs(got).max() > 0
