"""Vendor models as shipped: side inputs fed by the user, integer (token) inputs, sizes and ranks
known only at run time. Oracles: finite differences in float64 (onnx.reference) or closed forms."""

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from oracle import run_ref, to_float64

from onnxplain import Explainer, OnnxplainError
from onnxplain.graph.specialise import unknown_shapes

rng = np.random.default_rng(0)


# the zoo script that writes tests/zoo's vendor-style models: its model texts and builder serve here too
_spec = importlib.util.spec_from_file_location(
    "vendor_inputs", Path(__file__).resolve().parents[1] / "models" / "zoo" / "vendor_inputs.py"
)
vendor_inputs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(vendor_inputs)
_with, TOKENS = vendor_inputs.with_weights, vendor_inputs.TOKENS


def _fd(model, feeds: dict, wrt: str, out: str, w: np.ndarray, h: float = 1e-6, directions: int = 4):
    """Directional derivatives of sum(w * out) along random directions, float64, onnx.reference."""
    m64 = to_float64(model)
    f64 = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in feeds.items()}
    r = np.random.default_rng(1)
    us = [r.normal(size=f64[wrt].shape) for _ in range(directions)]

    def F(v):
        return float(np.sum(w * run_ref(m64, {**f64, wrt: v})[out]))

    return us, np.array([(F(f64[wrt] + h * u) - F(f64[wrt] - h * u)) / (2 * h) for u in us])


def _agrees(attribution, us, fd, tol=1e-4):
    an = np.array([np.sum(attribution.astype(np.float64) * u) for u in us])
    return float(np.linalg.norm(an - fd) / max(np.linalg.norm(fd), 1e-12)) < tol


# ---- side inputs: a recurrent state and a sample rate that an If branches on ---------------------------
SIDE = """
<ir_version: 8, opset_import: ["" : 17]>
side (float[N,4] x, float[1,4] state, int64 sr) => (float[N,3] y) {
    k = Constant <value = int64 {16000}> ()
    is16 = Equal (sr, k)
    xs = If (is16) <
        then_branch = g1 () => (float[N,4] a) { a = Mul (x, x) },
        else_branch = g2 () => (float[N,4] b) { b = Sin (x) }
    >
    z = Add (xs, state)
    y = MatMul (z, W)
}
"""


def test_side_inputs_are_fed_and_bound_as_constants():
    model = _with(SIDE, W=rng.normal(size=(4, 3)))
    x = rng.normal(size=(2, 4)).astype(np.float32)
    state = rng.normal(size=(1, 4)).astype(np.float32)
    with pytest.raises(
        OnnxplainError,
        match=r"need values: pass feeds=\{'state': \.\.\.\} \(command line: --feed "
        r"state=FILE.npy",
    ):
        Explainer(model)
    w = rng.normal(size=(2, 3)).astype(np.float32)
    for sr in (16000, 8000):  # each rate takes its own branch; the If folds once sr is a constant
        ex = Explainer(model, feeds={"state": state, "sr": np.int64(sr)})
        a = ex.explain(x, "gradient", target_weights=w)
        us, fd = _fd(model, {"x": x, "state": state, "sr": np.array(sr, np.int64)}, "x", "y", w)
        assert _agrees(a, us, fd), sr
    assert not any(n.op == "If" for n in ex.canonical.graph.nodes)  # folded to its branch
    with pytest.raises(OnnxplainError, match=r"feed 'state' expects shape \[1, 4\], got \[2, 4\]"):
        Explainer(model, feeds={"state": np.zeros((2, 4)), "sr": 16000})
    with pytest.raises(OnnxplainError, match="no input named 'rate'"):
        Explainer(model, feeds={"rate": 1, "state": state, "sr": 16000})
    with pytest.raises(OnnxplainError, match="feed 'sr' must hold integers"):
        Explainer(model, feeds={"state": state, "sr": 16000.5})


# ---- integer inputs: token ids explained through their embedding ----------------------------------------


def test_token_ids_are_explained_through_the_embedding():
    table, W = rng.normal(size=(10, 5)), rng.normal(size=(5, 3))
    model = _with(TOKENS, table=table, W=W)
    ids = np.array([[3, 1, 4, 1, 5, 0], [2, 7, 0, 0, 9, 6]], dtype=np.int64)
    ex = Explainer(model)
    assert ex.entry == "ids" and ex.inner == "e"
    res = ex.run(ids, "gradient", target=[1, 2])
    mask = (ids > 0).astype(np.float64)
    # closed form: d logits[k] / d e[t, d] = mask[t] / T * W[d, k]
    want = np.stack([mask[i][:, None] / 6 * W[:, k][None, :] for i, k in enumerate([1, 2])])
    np.testing.assert_allclose(res.attribution, want, rtol=1e-5, atol=1e-7)
    emb = table[ids]
    np.testing.assert_allclose(res.outputs["token_scores"], (emb * want).sum(-1), rtol=1e-5, atol=1e-7)
    assert res.outputs["token_scores"][0, 5] == 0 and res.outputs["token_scores"][1, 2] == 0  # padding
    # integrated gradients from a zero embedding: complete, and exact for a model linear in e
    ig = ex.run(ids, "integrated_gradients", target=[1, 2], steps=4)
    logits = (emb * mask[..., None]).mean(1) @ W
    np.testing.assert_allclose(ig.outputs["token_scores"].sum(1), logits[[0, 1], [1, 2]], rtol=1e-5)
    assert ex.run(ids, "lrp_epsilon").outputs["token_scores"].shape == (2, 6)
    with pytest.raises(OnnxplainError, match="takes integers"):
        ex.explain(ids.astype(np.float32))


def test_an_inner_float_tensor_can_be_the_explained_input():
    W = rng.normal(size=(4, 3))
    model = _with(
        """
    <ir_version: 8, opset_import: ["" : 17]>
    inner (float[N,4] x) => (float[N,3] y) {
        h = Tanh (x)
        y = MatMul (h, W)
    }""",
        W=W,
    )
    x = rng.normal(size=(2, 4)).astype(np.float32)
    a = Explainer(model, input="h").explain(x, "gradient", target=[0, 2])
    np.testing.assert_allclose(a, W[:, [0, 2]].T, rtol=1e-6)  # dy_k/dh = W[:, k], whatever x


# ---- sizes known only at run time: Resize to twice the input's own size ----------------------------------
DYNAMIC = """
<ir_version: 8, opset_import: ["" : 17]>
dyn (float[N,2,H,W] x) => (float[N,3] y) {
    s = Shape (x)
    lo = Constant <value = int64[1] {0}> ()
    two = Constant <value = int64[1] {2}> ()
    hi = Constant <value = int64[1] {4}> ()
    nc = Slice (s, lo, two)
    hw = Slice (s, two, hi)
    hw2 = Mul (hw, two)
    sizes = Concat <axis = 0> (nc, hw2)
    r = Resize <mode = "linear", coordinate_transformation_mode = "half_pixel"> (x, , , sizes)
    c = Conv <kernel_shape = [3, 3], pads = [1, 1, 1, 1]> (r, K)
    t = Tanh (c)
    p = GlobalAveragePool (t)
    f = Flatten (p)
    y = MatMul (f, V)
}
"""


@pytest.mark.parametrize("hw", [(5, 5), (4, 7)])
def test_symbolic_sizes_specialise_to_the_input(hw):
    model = _with(DYNAMIC, K=rng.normal(size=(4, 2, 3, 3)) * 0.5, V=rng.normal(size=(4, 3)))
    x = rng.normal(size=(2, 2, *hw)).astype(np.float32)
    ex = Explainer(model)
    w = rng.normal(size=(2, 3)).astype(np.float32)
    a = ex.explain(x, "gradient", target_weights=w)
    us, fd = _fd(model, {"x": x}, "x", "y", w)
    assert _agrees(a, us, fd)
    assert ex.shape is None and len(ex._children) == 1  # the specialised child did the work


# ---- ranks that shape inference loses (data-dependent Squeeze, as Paddle's exporter writes) ---------------
UNRANKED = """
<ir_version: 8, opset_import: ["" : 13]>
unranked (float[N,4,1,1] x) => (float[N,3] prob) {
    s = Shape (x)
    two = Constant <value = int64[1] {2}> ()
    end = Constant <value = int64[1] {4}> ()
    sp = Slice (s, two, end)
    one = Constant <value = int64 {1}> ()
    isone = Equal (sp, one)
    nz = NonZero (isone)
    flat = Constant <value = int64[1] {-1}> ()
    ax0 = Reshape (nz, flat)
    twos = Constant <value = int64 {2}> ()
    axes = Add (ax0, twos)
    q = Squeeze (x, axes)
    logits = MatMul (q, W)
    prob = Softmax <axis = -1> (logits)
}
"""


def test_unknown_ranks_are_probed():
    W = rng.normal(size=(4, 3))
    model = _with(UNRANKED, W=W)
    from onnxplain.graph.canonicalize import infer_shapes

    assert "logits" in unknown_shapes(infer_shapes(model))  # the situation this test is about
    x = rng.normal(size=(2, 4, 1, 1)).astype(np.float32)
    res = Explainer(model).run(x, "gradient")
    k = (x[:, :, 0, 0] @ W).argmax(1)
    np.testing.assert_array_equal(res.target, k)
    np.testing.assert_allclose(res.attribution[:, :, 0, 0], W[:, k].T, rtol=1e-6)  # d logit_k / dx = W[:, k]


# ---- the command line: --feed, --input-shape, and inspect telling the truth ---------------------------------
def test_cli_feeds_input_shapes_and_inspect(tmp_path):
    from typer.testing import CliRunner

    from onnxplain.cli import app
    from onnxplain.runtime.session import make_session

    run = CliRunner().invoke
    dyn = tmp_path / "dyn.onnx"
    onnx.save(_with(DYNAMIC, K=rng.normal(size=(4, 2, 3, 3)) * 0.5, V=rng.normal(size=(4, 3))), dyn)
    r = run(app, ["export", str(dyn), "-o", str(tmp_path / "d.onnx")])
    assert r.exit_code == 2 and "--input-shape x=N,C,H,W" in r.output and not (tmp_path / "d.onnx").exists()
    r = run(app, ["inspect", str(dyn)])
    assert r.exit_code == 0 and "gradient: needs --input-shape to export" in r.output
    r = run(app, ["export", str(dyn), "-o", str(tmp_path / "d.onnx"), "--input-shape", "x=1,2,5,6"])
    assert r.exit_code == 0, r.output
    x = rng.normal(size=(3, 2, 5, 6)).astype(np.float32)  # the batch axis stayed dynamic
    got = make_session(onnx.load(tmp_path / "d.onnx")).run(["attribution"], {"x": x, "target": np.array([0, 1, 2])})[0]
    np.testing.assert_allclose(got, Explainer(str(dyn)).explain(x, target=[0, 1, 2]), rtol=1e-5, atol=1e-6)

    side = tmp_path / "side.onnx"
    onnx.save(_with(SIDE, W=rng.normal(size=(4, 3))), side)
    np.save(tmp_path / "x.npy", rng.normal(size=(1, 4)).astype(np.float32))
    state = rng.normal(size=(1, 4)).astype(np.float32)
    np.save(tmp_path / "state.npy", state)
    r = run(app, ["explain", str(side), str(tmp_path / "x.npy"), "-d", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--feed state=FILE.npy" in r.output
    r = run(
        app,
        [
            "explain",
            str(side),
            str(tmp_path / "x.npy"),
            "-d",
            str(tmp_path / "o"),
            "--feed",
            f"state={tmp_path / 'state.npy'}",
            "--feed",
            "sr=8000",
        ],
    )
    assert r.exit_code == 0, r.output
    want = Explainer(str(side), feeds={"state": state, "sr": 8000}).explain(np.load(tmp_path / "x.npy"))
    np.testing.assert_allclose(np.load(tmp_path / "o" / "x.gradient.npy"), want[0], rtol=1e-6)
    r = run(app, ["inspect", str(side)])
    assert "other inputs to feed (feeds= / --feed NAME=...): state, sr" in r.output
    r = run(app, ["explain", str(side), str(tmp_path / "x.npy"), "--feed", "state"])
    assert r.exit_code == 2 and "--feed takes NAME=FILE.npy or NAME=NUMBER" in r.output

    tok = tmp_path / "tok.onnx"
    onnx.save(_with(TOKENS, table=rng.normal(size=(10, 5)), W=rng.normal(size=(5, 3))), tok)
    ids = np.array([[3, 1, 4, 1, 5, 0]], dtype=np.int64)
    np.save(tmp_path / "ids.npy", ids)
    r = run(app, ["explain", str(tok), str(tmp_path / "ids.npy"), "-m", "input_x_gradient", "-d", str(tmp_path / "t")])
    assert r.exit_code == 0 and "token scores (position:score) input_x_gradient: 0:" in r.output, r.output
    res = Explainer(str(tok)).run(ids, "input_x_gradient")
    np.testing.assert_allclose(
        np.load(tmp_path / "t" / "ids.input_x_gradient.tokens.npy"), res.outputs["token_scores"][0], rtol=1e-6
    )
    r = run(app, ["export", str(tok), "-m", "input_x_gradient", "-o", str(tmp_path / "tok.e.onnx")])
    assert r.exit_code == 0 and "explains input 'e'" in r.output
    got = make_session(onnx.load(tmp_path / "tok.e.onnx")).run(["attribution"], {"ids": ids})[0]
    np.testing.assert_allclose(got, res.attribution, rtol=1e-5, atol=1e-7)


def test_black_box_methods_over_tokens():
    """Occlusion replaces one token by the pad id (0); the oracle recomputes the model in numpy. On this
    model the score is additive over kept tokens, so KernelSHAP's Shapley values equal those drops."""
    table, W = rng.normal(size=(10, 5)), rng.normal(size=(5, 3))
    ex = Explainer(_with(TOKENS, table=table, W=W))
    ids = np.array([[3, 1, 4, 1, 5, 0], [2, 7, 0, 0, 9, 6]], dtype=np.int64)

    def logit(row, k):
        keep = (row > 0).astype(np.float64)
        return ((table[row] * keep[:, None]).mean(0) @ W)[k]

    want = np.array(
        [
            [logit(ids[i], k) - logit(np.where(np.arange(6) == j, 0, ids[i]), k) for j in range(6)]
            for i, k in enumerate([1, 2])
        ]
    )
    occ = ex.run(ids, "occlusion", target=[1, 2])
    np.testing.assert_allclose(occ.attribution, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(occ.target, [1, 2])
    np.testing.assert_allclose(occ.outputs["token_scores"], occ.attribution)
    shap = ex.run(ids, "kernelshap", target=[1, 2], samples=100)  # 2^6 - 2 coalitions: exact
    np.testing.assert_allclose(shap.attribution, want, rtol=1e-4, atol=1e-5)
    lime = ex.run(ids, "lime", target=[1, 2], samples=400)
    assert np.corrcoef(lime.attribution.ravel(), want.ravel())[0, 1] > 0.95
    with pytest.raises(OnnxplainError, match="over tokens is not available"):
        ex.run(ids, "rise")


# ---- the committed vendor-style zoo models (models/zoo/vendor_inputs.py) --------------------------------------
ZOO = Path(__file__).resolve().parent / "zoo"


@pytest.mark.parametrize(
    "name,shape,out",
    [
        ("detector_dynamic_resize.onnx", (1, 2, 5, 6), "y"),  # Resize to twice the input's own size
        ("detector_dynamic_resize.onnx", (2, 2, 4, 4), "y"),
        ("swin_computed_pads.onnx", (2, 3, 5, 7), "y"),  # pads up to a multiple of 4, computed from the shape
        ("swin_computed_pads.onnx", (1, 3, 8, 8), "y"),  # no padding needed
    ],
)
def test_zoo_models_with_run_time_sizes(name, shape, out):
    model = onnx.load(str(ZOO / name))
    x = rng.normal(size=shape).astype(np.float32)
    ex = Explainer(str(ZOO / name))
    y = run_ref(to_float64(model), {"x": x.astype(np.float64)})[out]
    w = rng.normal(size=y.shape).astype(np.float32)
    a = ex.explain(x, "gradient", target_weights=w)
    us, fd = _fd(model, {"x": x}, "x", out, w)
    assert _agrees(a, us, fd)


def test_zoo_token_classifier():
    model = onnx.load(str(ZOO / "token_classifier.onnx"))
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    table, W = weights["table"].astype(np.float64), weights["W"].astype(np.float64)
    ids = np.array([[1, 2, 3, 0, 0, 0], [9, 8, 7, 6, 5, 4]], dtype=np.int64)
    res = Explainer(str(ZOO / "token_classifier.onnx")).run(ids, "input_x_gradient", target=[0, 2])
    mask = (ids > 0).astype(np.float64)
    grad = np.stack([mask[i][:, None] / 6 * W[:, k][None, :] for i, k in enumerate([0, 2])])
    np.testing.assert_allclose(res.outputs["token_scores"], (table[ids] * grad).sum(-1), rtol=1e-5, atol=1e-7)


def test_token_black_box_with_a_bound_side_input_of_batch_one():
    """A BERT-like model whose attention mask [1, T] is bound with feeds=: the masked copies of one item run
    one row at a time (a batch of 16 copies would not match the bound mask), and match a numpy oracle."""
    t, d, k = 5, 4, 3
    table, W = rng.normal(size=(10, d)), rng.normal(size=(d, k))
    inits = [
        numpy_helper.from_array(table.astype(np.float32), "table"),
        numpy_helper.from_array(W.astype(np.float32), "W"),
        numpy_helper.from_array(np.array([2], np.int64), "axis2"),
    ]
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["e"]),
        helper.make_node("Shape", ["ids"], ["ids_shape"]),
        helper.make_node("Reshape", ["mask", "ids_shape"], ["m2"]),  # as BERT exports do: no broadcasting
        helper.make_node("Unsqueeze", ["m2", "axis2"], ["m3"]),
        helper.make_node("Mul", ["e", "m3"], ["em"]),
        helper.make_node("ReduceMean", ["em"], ["pooled"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["pooled", "W"], ["logits"]),
    ]
    g = helper.make_graph(
        nodes,
        "bert_like",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", t]),
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", t]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", k])],
        inits,
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    mask = np.array([[1, 1, 1, 1, 0]], np.float32)
    ids = np.array([[3, 1, 4, 1, 5]], np.int64)

    def logit(row):
        return ((table[row] * mask[0][:, None]).mean(0) @ W)[2]

    want = [logit(ids[0]) - logit(np.where(np.arange(t) == j, 0, ids[0])) for j in range(t)]
    got = Explainer(model, input="ids", feeds={"mask": mask}).run(ids, "occlusion", target=[2])
    np.testing.assert_allclose(got.attribution[0], want, rtol=1e-5, atol=1e-6)
