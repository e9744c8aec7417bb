"""Model-parameter randomisation (Adebayo et al. 2018, "Sanity Checks for Saliency Maps")."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from models import with_ops
from onnxplain.errors import OnnxplainError
from onnxplain.evaluation.metrics import sanity

CLASSES = 10


def three_layer_model(seed=0) -> onnx.ModelProto:
    """x[N,3,8,8] -> conv1 -> Relu -> conv2 -> Relu -> GlobalAveragePool -> Flatten -> fc (Gemm).

    conv2's weight is large (4608 values, mean 0.7, std 0.3) for the moment tests; its bias is all
    zeros and fc's bias is constant, so both have std 0 and must never change.
    """
    rng = np.random.default_rng(seed)
    arr = {
        "W1": rng.normal(size=(16, 3, 3, 3)),
        "B1": rng.normal(size=16),
        "W2": rng.normal(0.7, 0.3, size=(32, 16, 3, 3)),
        "B2": np.zeros(32),
        "W3": rng.normal(size=(CLASSES, 32)),
        "B3": np.full(CLASSES, 0.5),
    }
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in arr.items()]
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "W2", "B2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "W3", "B3"], ["logits"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "three",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


PARAMS = {"fc": ["W3", "B3"], "conv2": ["W2", "B2"], "conv1": ["W1", "B1"]}
CONSTANT = {"B2", "B3"}  # std 0: stay as they are


def inits(model) -> dict:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def changed(model, original) -> set:
    """Names of initializers whose values differ from the original's."""
    a, b = inits(model), inits(original)
    assert a.keys() == b.keys()
    return {k for k in a if not np.array_equal(a[k], b[k])}


def expected_changed(layers) -> set:
    return {p for name in layers for p in PARAMS[name]} - CONSTANT


def run(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


# ---- layers -----------------------------------------------------------------------------
def test_weight_layers_top_first():
    layers = sanity.weight_layers(three_layer_model())
    assert [(lay.name, lay.op) for lay in layers] == [("fc", "Gemm"), ("conv2", "Conv"), ("conv1", "Conv")]
    assert [sorted(lay.params) for lay in layers] == [sorted(PARAMS[n]) for n in ("fc", "conv2", "conv1")]


def test_batchnorm_is_folded_and_normalisation_counts_scale_and_bias_only():
    m = three_layer_model()
    g = m.graph
    # conv1 -> BatchNormalization (folded into conv1), then a LayerNormalization over the logits
    for node in g.node:
        if node.name == "relu1":
            node.input[0] = "bn"
        if node.name == "fc":
            node.output[0] = "pre"
    g.node.insert(1, helper.make_node("BatchNormalization", ["c1", "g", "b", "mu", "var"], ["bn"], name="bn1"))
    g.node.append(helper.make_node("LayerNormalization", ["pre", "ln_s", "ln_b"], ["logits"], name="ln", axis=-1))
    rng = np.random.default_rng(1)
    for name, v in [
        ("g", rng.uniform(0.5, 2, 16)),
        ("b", rng.normal(size=16)),
        ("mu", rng.normal(size=16)),
        ("var", rng.uniform(0.5, 2, 16)),
        ("ln_s", rng.normal(size=CLASSES)),
        ("ln_b", rng.normal(size=CLASSES)),
    ]:
        g.initializer.append(numpy_helper.from_array(v.astype(np.float32), name))
    layers = sanity.weight_layers(m)
    assert [(lay.name, lay.op) for lay in layers] == [
        ("ln", "LayerNormalization"),
        ("fc", "Gemm"),
        ("conv2", "Conv"),
        ("conv1", "Conv"),
    ]
    assert layers[0].params == ["ln_s", "ln_b"]
    assert "bn1" not in {lay.name for lay in layers}


def test_canonical_model_keeps_layer_and_parameter_names():
    m = three_layer_model()
    layers = sanity.weight_layers(m)
    assert sanity.weight_layers(sanity.canonical_model(m)) == layers
    assert sanity.weight_layers(sanity.randomise(m, ["fc", "conv1"])) == layers


# ---- randomise ---------------------------------------------------------------------------
@pytest.mark.parametrize("names", [["fc"], ["conv2"], ["conv1"], ["fc", "conv1"], ["fc", "conv2", "conv1"]])
def test_randomise_changes_exactly_the_named_layers(names):
    m = three_layer_model()
    r = sanity.randomise(m, names)
    assert changed(r, m) == expected_changed(names)
    for k, v in inits(r).items():
        assert v.shape == inits(m)[k].shape and v.dtype == inits(m)[k].dtype


def test_randomised_model_runs_with_the_same_output_shape_and_different_output():
    m = three_layer_model()
    x = np.random.default_rng(3).random((2, 3, 8, 8), dtype=np.float32)
    y = run(m, x)
    for names in (["fc"], ["conv1"]):
        yr = run(sanity.randomise(m, names), x)
        assert yr.shape == y.shape == (2, CLASSES)
        assert np.all(np.isfinite(yr)) and not np.allclose(yr, y)


def test_randomise_matches_moments_of_the_original():
    m = three_layer_model()
    w = inits(m)["W2"].astype(np.float64)
    rw = inits(sanity.randomise(m, ["conv2"]))["W2"].astype(np.float64)
    n = w.size
    assert rw.shape == w.shape
    assert abs(rw.mean() - w.mean()) < 5 * w.std() / np.sqrt(n)  # 5 standard errors
    assert abs(rw.std() / w.std() - 1) < 5 / np.sqrt(2 * n)
    # fresh noise, not a permutation or a copy: nearly uncorrelated with the trained weights
    assert abs(np.corrcoef(w.ravel(), rw.ravel())[0, 1]) < 5 / np.sqrt(n)


def test_redraw_large_tensor_moments_shape_and_dtype():
    v = np.random.default_rng(0).uniform(2.0, 4.0, size=(200, 1000)).astype(np.float16)  # mean 3, std 1/sqrt(3)
    r = sanity.redraw(v, np.random.default_rng(1))
    assert r.shape == v.shape and r.dtype == np.float16
    r64 = r.astype(np.float64)
    assert abs(r64.mean() - 3.0) < 0.01 and abs(r64.std() - 1 / np.sqrt(3)) < 0.01
    # Gaussian, not uniform: about 31.7 % of the values lie beyond one std (uniform: 42.3 %)
    outside = np.mean(np.abs(r64 - r64.mean()) > r64.std())
    assert abs(outside - 0.3173) < 0.01


def test_redraw_leaves_constant_and_empty_tensors():
    c = np.full((3, 4), 0.25, dtype=np.float32)
    assert np.array_equal(sanity.redraw(c, np.random.default_rng(0)), c)
    e = np.zeros((0, 4), dtype=np.float32)
    assert sanity.redraw(e, np.random.default_rng(0)).shape == (0, 4)


def test_randomise_is_deterministic_and_per_layer():
    m = three_layer_model()
    a = sanity.randomise(m, ["conv2"], seed=5)
    b = sanity.randomise(m, ["conv2"], seed=5)
    assert a.SerializeToString() == b.SerializeToString()
    c = sanity.randomise(m, ["conv2"], seed=6)
    assert not np.array_equal(inits(a)["W2"], inits(c)["W2"])
    # conv2's new weights do not depend on which other layers are randomised with it
    both = sanity.randomise(m, ["fc", "conv2"], seed=5)
    assert np.array_equal(inits(both)["W2"], inits(a)["W2"])


def test_input_model_is_never_modified():
    m = three_layer_model()
    before = m.SerializeToString()
    sanity.weight_layers(m)
    sanity.randomise(m, ["fc", "conv2", "conv1"])
    list(sanity.cascading(m))
    list(sanity.independent(m))
    assert m.SerializeToString() == before


def test_randomise_from_a_path(tmp_path):
    m = three_layer_model()
    p = tmp_path / "m.onnx"
    onnx.save(m, str(p))
    assert changed(sanity.randomise(str(p), ["fc"]), m) == {"W3"}


# ---- cascading / independent -------------------------------------------------------------
def test_cascading_randomises_top_down_cumulatively():
    m = three_layer_model()
    steps = list(sanity.cascading(m))
    assert [label for label, _ in steps] == ["fc", "conv2", "conv1"]
    order = ["fc", "conv2", "conv1"]
    for k, (_, model) in enumerate(steps):
        assert changed(model, m) == expected_changed(order[: k + 1])


def test_independent_randomises_one_layer_each():
    m = three_layer_model()
    steps = list(sanity.independent(m))
    assert [label for label, _ in steps] == ["fc", "conv2", "conv1"]
    for label, model in steps:
        assert changed(model, m) == expected_changed([label])


def test_cascading_and_independent_draw_the_same_values_per_layer():
    m = three_layer_model()
    cas = dict(sanity.cascading(m, seed=2))
    ind = dict(sanity.independent(m, seed=2))
    assert np.array_equal(inits(cas["conv1"])["W1"], inits(ind["conv1"])["W1"])
    assert np.array_equal(inits(cas["conv1"])["W3"], inits(ind["fc"])["W3"])


# ---- bad input ---------------------------------------------------------------------------
def test_unknown_layer_name():
    with pytest.raises(OnnxplainError, match="no weight layer named 'conv9'.*fc, conv2, conv1"):
        sanity.randomise(three_layer_model(), ["fc", "conv9"])


def test_model_without_weight_layers():
    with pytest.raises(OnnxplainError, match="no layers with learned weights"):
        sanity.weight_layers(with_ops(["Relu", "Sigmoid"]))
    with pytest.raises(OnnxplainError, match="no layers with learned weights"):
        list(sanity.cascading(with_ops(["Relu"])))


def test_matmul_with_weights_computed_from_the_input_is_not_a_layer():
    # x @ x^T has no constant float input: no learned weights
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], name="t"),
        helper.make_node("MatMul", ["x", "xt"], ["y"], name="mm"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    with pytest.raises(OnnxplainError):
        sanity.weight_layers(m)


# ---- randomisation_scores ---------------------------------------------------------------
def _ramps(n=2, h=8, w=9):
    """Maps with distinct positive values: a ramp, shifted per image."""
    base = np.arange(h * w, dtype=np.float64).reshape(h, w) + 1.0
    return np.stack([base + 10 * i for i in range(n)])


def test_scores_known_answers_with_a_synthetic_explainer():
    ref = _ramps()
    # a model-agnostic explain callable: the "models" are just keys into fixed maps
    maps = {"same": ref, "cube": ref**3, "neg": -ref, "flip": ref[:, ::-1, ::-1].copy()}
    x = np.zeros((2, 3, 8, 9), np.float32)
    t = np.zeros(2, np.int64)
    calls = []
    rows = sanity.randomisation_scores(
        lambda m, xx, tt: maps[m],
        x,
        t,
        [(k, k) for k in maps],
        ref,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert [r["layer"] for r in rows] == list(maps)
    by = {r["layer"]: r for r in rows}
    np.testing.assert_allclose(by["same"]["spearman"], [1, 1])
    np.testing.assert_allclose(by["same"]["ssim"], [1, 1])
    np.testing.assert_allclose(by["cube"]["spearman"], [1, 1])  # monotone: same ranks
    np.testing.assert_allclose(by["neg"]["spearman"], [-1, -1])
    np.testing.assert_allclose(by["neg"]["spearman_abs"], [1, 1])  # |-ref| = |ref|
    np.testing.assert_allclose(by["flip"]["spearman"], [-1, -1])  # a ramp reversed: ranks reversed
    assert np.array_equal(by["cube"]["maps"], ref**3)
    assert all(r["spearman"].shape == (2,) for r in rows)
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_scores_reject_maps_of_the_wrong_shape():
    ref = _ramps()
    x = np.zeros((2, 3, 8, 9), np.float32)
    with pytest.raises(OnnxplainError, match="reference"):
        sanity.randomisation_scores(lambda m, xx, tt: ref, x, None, [("a", None)], ref[0])
    with pytest.raises(OnnxplainError, match="'a'"):
        sanity.randomisation_scores(lambda m, xx, tt: ref[:1], x, None, [("a", None)], ref)
    with pytest.raises(OnnxplainError, match="'a'"):
        sanity.randomisation_scores(lambda m, xx, tt: ref[:, :4], x, None, [("a", None)], ref)


# ---- the demo model, true gradients -------------------------------------------------------
@pytest.fixture(scope="module")
def demo():
    from onnxplain.io.resources import demo_model
    from onnxplain.io.shapes_data import make_shapes

    images, labels, _ = make_shapes(3, seed=7, size=64)
    return demo_model(), images, labels.astype(np.int64)


def gradient_maps(model, x, target):
    from onnxplain import Explainer

    return Explainer(model).run(x, "gradient", target=target).attribution.sum(axis=1)


def test_demo_gradient_identical_model_scores_one(demo):
    model, x, y = demo
    ref = gradient_maps(model, x, y)
    [row] = sanity.randomisation_scores(gradient_maps, x, y, [("original", model)], ref)
    np.testing.assert_allclose(row["spearman"], 1.0)
    np.testing.assert_allclose(row["spearman_abs"], 1.0)
    np.testing.assert_allclose(row["ssim"], 1.0)


def test_demo_gradient_full_cascading_randomisation_decorrelates(demo):
    model, x, y = demo
    ref = gradient_maps(model, x, y)
    steps = list(sanity.cascading(model))
    assert len(steps) == 6  # fc and five convolutions (BatchNorm folded)
    rows = sanity.randomisation_scores(gradient_maps, x, y, steps[-1:], ref)
    assert rows[0]["layer"] == steps[-1][0] == "/features/features.0/Conv"
    assert rows[0]["maps"].shape == ref.shape
    assert np.nanmean(rows[0]["spearman_abs"]) < 0.3  # trained vs trained: 1 (test above)


def test_a_map_that_became_constant_has_rank_correlation_zero():
    from onnxplain.evaluation.metrics.sanity import score_maps

    ramp = np.arange(16, dtype=float).reshape(1, 4, 4)
    reference = np.concatenate([ramp, ramp, np.zeros((1, 4, 4))])
    maps = np.concatenate([np.zeros((1, 4, 4)), ramp, np.zeros((1, 4, 4))])
    row = score_maps("fc", maps, reference)
    assert row["spearman_abs"][0] == 0.0 and row["spearman"][0] == 0.0  # lost all its ordering
    assert row["spearman_abs"][1] == pytest.approx(1.0)  # unchanged
    assert np.isnan(row["spearman_abs"][2])  # constant before and after: undefined
