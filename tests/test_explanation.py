"""The explanation graph's contract and the gradient-family methods, on tiny handwritten models."""

import numpy as np
import onnx
import pytest
from oracle import check_vjp

import onnxplain
from models import tiny_cnn, with_ops
from onnxplain import Explainer, OnnxplainError, Options, UnsupportedOpsError
from onnxplain.runtime.session import make_session

rng = np.random.default_rng(0)
X = rng.normal(size=(3, 3, 8, 8)).astype(np.float32)


def logits_of(x, target):
    m = tiny_cnn(softmax=False)
    out = make_session(m).run(None, {"x": x})[0]
    return out[np.arange(len(x)), target]


def test_contract_inputs_outputs_and_checker():
    m = onnxplain.build(tiny_cnn(), "gradient")
    onnx.checker.check_model(m, full_check=True)
    assert [i.name for i in m.graph.input] == ["x", "target"]
    assert [o.name for o in m.graph.output] == ["prob", "attribution", "target_index"]
    default = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}["target"]
    assert default.tolist() == [-1]
    prob, attribution, target = make_session(m).run(None, {"x": X})
    assert attribution.shape == X.shape
    np.testing.assert_array_equal(target, prob.argmax(1))  # -1 means argmax


def test_default_explains_logits_not_probabilities():
    ex = Explainer(tiny_cnn())
    t = np.array([0, 3, 1])
    a = ex.explain(X, target=t)
    # the gradient of the pre-softmax logit, by finite differences in float64
    for i in range(len(X)):
        w = np.zeros((1, 5))
        w[0, t[i]] = 1
        res = check_vjp(tiny_cnn(softmax=False), {"x": X[i : i + 1]}, "x", "logits", ort=False)
        assert res.error < 1e-6
        ref = Explainer(tiny_cnn(softmax=False)).explain(X[i : i + 1], target_weights=w)
        np.testing.assert_allclose(a[i : i + 1], ref, rtol=1e-5, atol=1e-6)
    p = Explainer(tiny_cnn(), probabilities=True).explain(X, target=t)
    assert np.abs(p - a).max() > 1e-3 * np.abs(a).max()


def test_class_target_equals_one_hot_weights():
    ex = Explainer(tiny_cnn(softmax=False))
    t = np.array([4, 0, 2])
    w = np.eye(5, dtype=np.float32)[t]
    np.testing.assert_allclose(ex.explain(X, target=t), ex.explain(X, target_weights=w), rtol=1e-6, atol=1e-7)


def test_fixed_batch_one_model_loops_over_items():
    ex_fixed, ex_dyn = Explainer(tiny_cnn(batch=1)), Explainer(tiny_cnn())
    np.testing.assert_allclose(
        ex_fixed.explain(X, target=[1, 2, 3]), ex_dyn.explain(X, target=[1, 2, 3]), rtol=1e-6, atol=1e-7
    )


@pytest.mark.parametrize(
    "bad,match",
    [
        (dict(target=5), "out of range"),
        (dict(target=[0, 1]), "one class per batch item"),
        (dict(target=1.5), "integer"),
    ],
)
def test_bad_targets(bad, match):
    with pytest.raises(OnnxplainError, match=match):
        Explainer(tiny_cnn()).explain(X, **bad)


def test_bad_inputs():
    ex = Explainer(tiny_cnn())
    with pytest.raises(OnnxplainError, match="expects shape"):
        ex.explain(X[:, :2])
    with pytest.raises(OnnxplainError, match="float"):
        ex.explain(X.astype(np.int32))
    bad = X.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(OnnxplainError, match="NaN"):
        ex.explain(bad)


def test_unsupported_ops_listed_together_before_anything_is_built():
    m = with_ops(["Relu", "Round", "Hardmax", "Floor"])
    with pytest.raises(UnsupportedOpsError) as err:
        onnxplain.build(m, "gradient", Options(target_mode="weights"))
    names = [n for _, n in err.value.nodes]
    assert names == ["round_1", "hardmax_2", "floor_3"]
    assert "Round 'round_1'" in str(err.value) and "Floor 'floor_3'" in str(err.value)


def test_unsupported_op_off_the_path_is_fine():
    m = tiny_cnn(softmax=False)
    m.graph.node.append(onnx.helper.make_node("ArgMax", ["logits"], ["label"], axis=1))
    m.graph.node.append(onnx.helper.make_node("Round", ["x"], ["rounded"]))
    m.graph.output.append(onnx.helper.make_tensor_value_info("label", onnx.TensorProto.INT64, ["N", 1]))
    a = Explainer(m).explain(X)
    assert a.shape == X.shape


def test_methods_relations():
    ex = Explainer(tiny_cnn())
    g = ex.explain(X, "gradient", target=2)
    np.testing.assert_allclose(ex.explain(X, "input_x_gradient", target=2), X * g, rtol=1e-6)
    np.testing.assert_allclose(ex.explain(X, "saliency", target=2), np.abs(g).max(1, keepdims=True), rtol=1e-6)
    s1 = ex.explain(X, "smoothgrad", target=2, samples=8, seed=3)
    s2 = ex.explain(X, "smoothgrad", target=2, samples=8, seed=3)
    np.testing.assert_array_equal(s1, s2)
    assert not np.allclose(s1, g)
    assert (ex.explain(X, "smoothgrad_sq", target=2, samples=8) >= 0).all()


def test_integrated_gradients_completeness_converges():
    ex = Explainer(tiny_cnn())
    t = np.array([0, 1, 2])
    delta = logits_of(X, t) - logits_of(np.zeros_like(X), t)
    errs = []
    for steps in (4, 32, 256):
        a = ex.explain(X, "integrated_gradients", target=t, steps=steps)
        errs.append(np.abs(a.reshape(3, -1).sum(1) - delta).max() / np.abs(delta).max())
    assert errs[2] < errs[0] and errs[2] < 2e-3, errs


def test_integrated_gradients_baseline():
    ex = Explainer(tiny_cnn())
    base = np.full_like(X, 0.25)
    a = ex.explain(X, "integrated_gradients", target=1, baseline=base, steps=512)
    delta = logits_of(X, [1, 1, 1]) - logits_of(base, [1, 1, 1])
    assert np.abs(a.reshape(3, -1).sum(1) - delta).max() < 2e-3 * np.abs(delta).max()


def test_in_graph_integrated_gradients_equals_the_driver():
    m = onnxplain.build(tiny_cnn(), "integrated_gradients", Options(steps=16))
    onnx.checker.check_model(m, full_check=True)
    assert "baseline" in [i.name for i in m.graph.input]
    t = np.array([3, 3, 0])
    got = make_session(m).run(["attribution"], {"x": X, "target": t})[0]
    want = Explainer(tiny_cnn()).explain(X, "integrated_gradients", target=t, steps=16)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("chunk", [1, 5, 16, 40])
def test_integrated_gradients_in_chunks_of_path_points(chunk):
    """17 points: x itself and 16 copies in chunks of ``chunk`` (5: 5+5+5+1), in the graph and from Python."""
    t = np.array([3, 3, 0])
    want = Explainer(tiny_cnn()).explain(X, "integrated_gradients", target=t, steps=17, chunk=17)
    m = onnxplain.build(tiny_cnn(), "integrated_gradients", Options(steps=17, chunk=chunk))
    onnx.checker.check_model(m, full_check=True)
    got = make_session(m).run(["attribution"], {"x": X, "target": t})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    ex = Explainer(tiny_cnn())
    py = ex.explain(X, "integrated_gradients", target=t, steps=17, chunk=chunk, batch_size=3)
    np.testing.assert_allclose(py, want, rtol=1e-4, atol=1e-5)


def test_in_graph_integrated_gradients_completeness():
    """sum(IG) = F(x) - F(baseline) (Sundararajan et al. 2017, completeness), 257 points in chunks of 64."""
    m = onnxplain.build(tiny_cnn(), "integrated_gradients", Options(steps=257, chunk=64))
    base = np.full_like(X, 0.25)
    t = np.array([0, 1, 2])
    a = make_session(m).run(["attribution"], {"x": X, "target": t, "baseline": base})[0]
    delta = logits_of(X, t) - logits_of(base, t)
    assert np.abs(a.reshape(3, -1).sum(1) - delta).max() < 2e-3 * np.abs(delta).max()


def test_in_graph_smoothgrad_runs_and_needs_dynamic_batch():
    m = onnxplain.build(tiny_cnn(), "smoothgrad", Options(samples=4))
    onnx.checker.check_model(m, full_check=True)
    a = make_session(m).run(["attribution"], {"x": X})[0]
    assert a.shape == X.shape and np.isfinite(a).all()
    with pytest.raises(OnnxplainError, match="dynamic batch"):
        onnxplain.build(tiny_cnn(batch=1), "integrated_gradients")


def test_segmentation_class_axis():
    """A [N, K, H, W] output: class k means the sum of channel k over all pixels."""
    rng2 = np.random.default_rng(1)
    w = onnx.numpy_helper.from_array(rng2.normal(size=(4, 3, 3, 3)).astype(np.float32), "W")
    g = onnx.helper.make_graph(
        [
            onnx.helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]),
            onnx.helper.make_node("Relu", ["c"], ["seg"]),
        ],
        "seg",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 8, 8])],
        [onnx.helper.make_tensor_value_info("seg", onnx.TensorProto.FLOAT, ["N", 4, 8, 8])],
        [w],
    )
    m = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8)
    ex = Explainer(m)
    weights = np.zeros((3, 4, 8, 8), np.float32)
    weights[:, 2] = 1
    np.testing.assert_allclose(ex.explain(X, target=2), ex.explain(X, target_weights=weights), rtol=1e-6)


def test_reserved_names_refused():
    m = tiny_cnn()
    m.graph.node[-1].output[0] = "attribution"
    m.graph.output[0].name = "attribution"
    with pytest.raises(OnnxplainError, match="reserved"):
        onnxplain.build(m, "gradient")


def test_class_mode_runs_in_the_reference_evaluator():
    """The class-target head (ArgMax, Where, OneHot) is plain ONNX: onnx.reference runs it in float64."""
    from oracle import run_ref, to_float64

    m = onnxplain.build(to_float64(tiny_cnn()), "gradient")
    out = run_ref(m, {"x": X.astype(np.float64), "target": np.array([-1, 2, 4])})
    want = Explainer(tiny_cnn()).run(X, target=[-1, 2, 4])
    np.testing.assert_array_equal(out["target_index"], want.target)
    np.testing.assert_allclose(out["attribution"], want.attribution, rtol=1e-4, atol=1e-5)
