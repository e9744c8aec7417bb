"""Score-CAM, Ablation-CAM (forward-only, batched through one session) and Zeiler & Fergus unit
explanations (featurevis), against slow direct definitions."""

import numpy as np
import onnx
import pytest
from onnx import helper
from oracle import check_vjp, run_ref, to_float64

from models import tiny_cnn
from onnxplain import Explainer
from onnxplain.errors import OnnxplainError
from onnxplain.methods import cam_forward as cf
from onnxplain.methods.featurevis import parse_unit, unit_weights
from onnxplain.runtime.session import make_session


def _x(n=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 3, 8, 8)).astype(np.float32)


@pytest.mark.parametrize("method,score", [("scorecam", "softmax"), ("scorecam", "logit"), ("ablationcam", "softmax")])
def test_forward_cams_equal_unbatched_loops(method, score):
    model, x = tiny_cnn(), _x(5)
    ex = Explainer(model)
    kw = {"score": score} if method == "scorecam" else {}  # Ablation-CAM has no score option
    res = ex.run(x, method, **kw, batch_size=3)  # 4 channels per item: chunks cross items' boundaries
    ref = cf.reference(model, x, method, None, score=score)  # one onnxruntime run per perturbed input
    np.testing.assert_array_equal(res.outputs["attribution_layer"], ref)
    assert res.attribution.shape == (5, 1, 8, 8) and res.outputs["attribution_layer"].shape == (5, 1, 8, 8)
    np.testing.assert_array_equal(res.attribution, cf.upsample(ref, (8, 8)))
    assert np.all(res.attribution >= 0) and np.any(res.attribution > 0)
    logits = make_session(tiny_cnn(softmax=False)).run(None, {"x": x})[0]
    np.testing.assert_array_equal(res.target, logits.argmax(1))
    # an explicit target and target weights (one-hot) agree
    t = np.array([0, 1, 2, 3, 4])
    a = ex.run(x, method, target=t, **kw).attribution
    w = np.eye(5, dtype=np.float32)[t]
    np.testing.assert_allclose(ex.run(x, method, target_weights=w, **kw).attribution, a, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(
        cf.upsample(cf.reference(model, x[:1], method, None, target=0, score=score), (8, 8)), a[:1]
    )


@pytest.mark.parametrize("method", cf.METHODS)
def test_fixed_batch_one_model(method):
    x = _x(3, seed=1)
    dyn = Explainer(tiny_cnn()).run(x, method, batch_size=64)
    fixed = Explainer(tiny_cnn(batch=1)).run(x, method, batch_size=64)  # looped one item at a time
    np.testing.assert_allclose(fixed.attribution, dyn.attribution, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(fixed.target, dyn.target)


def test_tap_graph_mask_zeroes_channels_in_the_graph():
    model, x = tiny_cnn(), _x(2)
    m, tap = cf.tap_graph(model, Explainer(model).options)
    assert tap.name == "r"
    sess = make_session(m)
    mask = np.ones((2, 4), dtype=np.float32)
    act, logits, prob = sess.run([cf.ACT, cf.LOGITS, "prob"], {"x": x, cf.MASK: mask})
    np.testing.assert_allclose(prob, make_session(model).run(None, {"x": x})[0], rtol=1e-6)
    mask[:, 2] = 0
    off = sess.run([cf.LOGITS], {"x": x, cf.MASK: mask})[0]
    w2 = onnx.numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "W2"))
    act2 = act.copy()
    act2[:, 2] = 0
    np.testing.assert_allclose(off, act2.reshape(2, -1) @ w2.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logits, act.reshape(2, -1) @ w2.T, rtol=1e-5, atol=1e-5)


def test_progress_callback_and_named_layer():
    model, x = tiny_cnn(), _x(2)
    calls = []
    Explainer(model).run(x, "ablationcam", layer="c", progress=lambda d, t: calls.append((d, t)), batch_size=2)
    assert calls[-1] == (8, 8) and len(calls) == 4  # 2 items x 4 channels, 2 passes per run
    with pytest.raises(OnnxplainError, match="no tensor or node named"):
        Explainer(model).run(x, "scorecam", layer="nope")


def test_upsample_matches_onnx_resize():
    a = np.random.default_rng(0).normal(size=(2, 3, 4, 5)).astype(np.float32)
    node = helper.make_node(
        "Resize", ["a", "", "scales"], ["y"], mode="linear", coordinate_transformation_mode="half_pixel"
    )
    g = helper.make_graph(
        [node],
        "r",
        [helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, a.shape)],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(np.array([1, 1, 4, 3], dtype=np.float32), "scales")],
    )
    want = make_session(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)).run(
        None, {"a": a}
    )[0]
    np.testing.assert_allclose(cf.upsample(a, (16, 15)), want, rtol=1e-5, atol=1e-6)


# ---- featurevis -------------------------------------------------------------------------------------
def _with_output(model, name):
    m = onnx.shape_inference.infer_shapes(model)
    if name not in {o.name for o in m.graph.output}:
        m.graph.output.append(next(v for v in m.graph.value_info if v.name == name))
    return m


@pytest.mark.parametrize("unit", [("r", 2, 3, 4), ("r", 1), ("c", 3, 0, 7), ("logits", 2)])
def test_unit_gradient_equals_finite_differences(unit):
    model, x = tiny_cnn(), _x(2, seed=3)
    g = Explainer(model).explain(x, "gradient", unit=unit)
    m64 = to_float64(_with_output(model, unit[0]))
    x64 = x.astype(np.float64)
    w = unit_weights((2, *run_ref(m64, {"x": x64[:1]})[unit[0]].shape[1:]), unit, np.float64)

    def f(z):
        return float(np.sum(w * run_ref(m64, {"x": z})[unit[0]]))

    rng, h = np.random.default_rng(0), 1e-5
    for _ in range(4):
        u = rng.normal(size=x.shape)
        fd = (f(x64 + h * u) - f(x64 - h * u)) / (2 * h)
        assert abs(np.sum(g * u) - fd) <= 1e-4 * max(1.0, abs(fd))
    # and the same gradient graph (inner tensor as explained output) passes the shared VJP oracle
    chk = check_vjp(_with_output(model, unit[0]), {"x": x}, "x", output=unit[0])
    assert chk.error < 1e-6 and chk.error_f32 < 1e-4


def test_deconvnet_and_guided_unit_explanations_run():
    model, x = tiny_cnn(), _x(2, seed=4)
    ex = Explainer(model)
    grads = {m: ex.explain(x, m, unit=("r", 1)) for m in ("gradient", "deconvnet", "guided_backprop")}
    for m, a in grads.items():
        assert a.shape == x.shape and np.all(np.isfinite(a)) and np.any(a != 0), m
    assert not np.allclose(grads["deconvnet"], grads["gradient"])
    # a fixed-batch-1 model gives the same, looped
    one = Explainer(tiny_cnn(batch=1)).explain(x, "deconvnet", unit=("r", 1))
    np.testing.assert_allclose(one, grads["deconvnet"], rtol=1e-5, atol=1e-6)


def test_unit_parsing_and_errors():
    assert parse_unit("conv2:5") == ("conv2", 5)
    assert parse_unit("/a/b:Conv_output_0:5:1:2") == ("/a/b:Conv_output_0", 5, 1, 2)
    for bad in ("conv2", "conv2:x", ":3"):
        with pytest.raises(OnnxplainError):
            parse_unit(bad)
    ex, x = Explainer(tiny_cnn()), _x(1)
    with pytest.raises(OnnxplainError, match="out of range"):
        ex.explain(x, "gradient", unit=("r", 4))
    with pytest.raises(OnnxplainError, match="no tensor named"):
        ex.explain(x, "gradient", unit=("nope", 0))
    with pytest.raises(OnnxplainError, match="does not take 'unit'"):
        ex.explain(x, "lrp_epsilon", unit=("r", 0))
    with pytest.raises(OnnxplainError, match="not both"):
        ex.explain(x, "gradient", target=1, unit=("r", 0))


def _skip_model():
    """x -> conv a -> relu r -> conv b -> Add(b, a) -> GlobalAveragePool -> Flatten -> Gemm: a skip
    connection around "r"."""
    rng = np.random.default_rng(2)
    init = [
        onnx.numpy_helper.from_array(v.astype(np.float32), k)
        for k, v in {
            "Wa": rng.normal(size=(4, 3, 3, 3)),
            "Wb": rng.normal(size=(4, 4, 3, 3)) / 3,
            "Wf": rng.normal(size=(5, 4)),
        }.items()
    ]
    nodes = [
        helper.make_node("Conv", ["x", "Wa"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("Conv", ["r", "Wb"], ["b"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["b", "a"], ["s"]),
        helper.make_node("GlobalAveragePool", ["s"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "Wf"], ["logits"], transB=1),
    ]
    g = helper.make_graph(
        nodes,
        "skip",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", 5])],
        init,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_ablation_head_only_and_skip_connection_fallback():
    x = _x(3, seed=5)
    ex = Explainer(tiny_cnn())
    fast = ex.run(x, "ablationcam")
    assert ex._forward_cams[None].head is not None  # Reshape -> Gemm after the layer: the head alone
    full = cf.explain(ex, x, "ablationcam", np.full(3, -1), fast=False)[1]  # whole passes
    np.testing.assert_array_equal(fast.outputs["attribution_layer"], full)
    sk = _skip_model()
    ex2 = Explainer(sk)
    res = ex2.run(x, "ablationcam", layer="r")
    assert ex2._forward_cams["r"].head is None  # Add reads "a" from before "r": whole passes
    np.testing.assert_array_equal(res.outputs["attribution_layer"], cf.reference(sk, x, "ablationcam", "r"))
    # the default layer of the skip model (the Add's output) has a head of its own
    res = ex2.run(x, "ablationcam")
    np.testing.assert_array_equal(res.outputs["attribution_layer"], cf.reference(sk, x, "ablationcam", None))


def test_cli_forward_cams_and_unit(tmp_path):
    from typer.testing import CliRunner

    from onnxplain.cli import app

    runner = CliRunner()
    mp = tmp_path / "m.onnx"
    onnx.save_model(tiny_cnn(), str(mp))
    x = _x(1, seed=6)
    np.save(tmp_path / "a.npy", x[0])
    out = tmp_path / "out"
    r = runner.invoke(
        app, ["explain", str(mp), str(tmp_path / "a.npy"), "-m", "scorecam", "-m", "ablationcam", "-d", str(out)]
    )
    assert r.exit_code == 0, r.output
    ex = Explainer(tiny_cnn())
    for m in ("scorecam", "ablationcam"):
        np.testing.assert_allclose(np.load(out / f"a.{m}.npy"), ex.explain(x, m)[0], rtol=1e-6)
    r = runner.invoke(
        app, ["explain", str(mp), str(tmp_path / "a.npy"), "-m", "deconvnet", "--unit", "r:1:2:3", "-d", str(out)]
    )
    assert r.exit_code == 0, r.output
    np.testing.assert_allclose(
        np.load(out / "a.deconvnet.npy"), ex.explain(x, "deconvnet", unit=("r", 1, 2, 3))[0], rtol=1e-6
    )
    for bad, msg in (
        (["--unit", "r:9"], "out of range"),
        (["--unit", "r:1", "-t", "0"], "not both"),
        (["--unit", "r"], "LAYER:CHANNEL"),
    ):
        r = runner.invoke(
            app, ["explain", str(mp), str(tmp_path / "a.npy"), "-m", "gradient", *bad, "-d", str(tmp_path / "o2")]
        )
        assert r.exit_code != 0 and msg in r.output, r.output
    r = runner.invoke(app, ["export", str(mp), "-m", "scorecam", "-o", str(tmp_path / "x.onnx")])
    assert r.exit_code != 0 and "onnxplain explain" in r.output


@pytest.mark.parametrize("name", ["vit_ts17.onnx", "vit_dynamo18.onnx", "resnet_ts13.onnx"])
@pytest.mark.parametrize("method", cf.METHODS)
def test_zoo_models_token_maps_and_fixed_batch(name, method):
    """Token maps [N, T, D] (class token dropped, 4x4 grid), a fixed-batch-1 ViT, a ResNet."""
    import os

    model = onnx.load(os.path.join(os.path.dirname(__file__), "zoo", name))
    dims = [d.dim_value or 2 for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(0).normal(size=[2, *dims[1:]]).astype(np.float32)
    ex = Explainer(model)
    res = ex.run(x, method, batch_size=5)
    ref = cf.reference(model, x, method, None)
    np.testing.assert_array_equal(res.outputs["attribution_layer"], ref)
    assert res.attribution.shape == (2, 1, *x.shape[2:]) and ref.max() > 0
