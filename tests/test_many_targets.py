"""Many targets in one pass: ``target`` [N, K] gives attribution [N, K, ...], and must equal K runs with one
target each (the single-target graphs are checked against finite differences in test_zoo.py)."""

import json
import pathlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxplain
from onnxplain.errors import OnnxplainError
from onnxplain.graph.backward import FoldError
from onnxplain.graph.rewrite import FOLDED, Options

ZOO = pathlib.Path(__file__).parent / "zoo"
MANIFEST = json.loads((ZOO / "manifest.json").read_text())
DYNAMIC = [e for e in MANIFEST if e.get("dynamic_batch") and e["family"] != "segnet" and e["opset"] <= 25]
REFUSED = ("sklearn_mlp", "recurrent")  # no symbolic batch axis; GRU/LSTM/RNN rules (the API loops there)


def session(m):
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])


def targets(n, k, classes, rng):
    t = rng.integers(0, classes, size=(n, k))
    t[0, -1] = -1  # an arg-max entry
    return t


@pytest.mark.parametrize("entry", DYNAMIC, ids=[e["file"] for e in DYNAMIC])
def test_folded_graph_equals_one_target_at_a_time(entry):
    model = onnx.load(ZOO / entry["file"])
    rng = np.random.default_rng(3)
    shape = [2, *entry["input_shape"][1:]]
    x = rng.normal(size=shape).astype(np.float32)
    folded = []
    for method in FOLDED:
        one = session(onnxplain.build(model, method, Options(input=entry["input"], output=entry["output"])))
        try:
            many = onnxplain.build(
                model, method, Options(input=entry["input"], output=entry["output"], target_mode="classes")
            )
        except FoldError as e:  # refused: one line, and the API falls back (test_api_falls_back_...)
            assert "\n" not in str(e)
            continue
        c = session(model).run(None, {entry["input"]: x})[0].shape[-1]
        t = targets(2, 3, min(c, 10), rng)
        a, idx = session(many).run(["attribution", "target_index"], {entry["input"]: x, "target": t})
        assert a.shape == (2, 3, *one.run(["attribution"], {entry["input"]: x})[0].shape[1:])
        for k in range(3):
            ak, ik = one.run(["attribution", "target_index"], {entry["input"]: x, "target": t[:, k]})
            np.testing.assert_array_equal(idx[:, k], ik)
            np.testing.assert_allclose(a[:, k], ak, rtol=1e-5, atol=1e-6 * np.abs(ak).max())
        folded.append(method)
    assert folded or entry["family"] in REFUSED, "the fold should apply to this model"


def small_cnn(batch="N"):
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(size=(4, 5)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("HardSwish", ["c"], ["h"]),
        helper.make_node("GlobalAveragePool", ["h"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("MatMul", ["f", "w2"], ["y"]),
    ]
    g = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 5])],
        [w1, w2],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize(
    "method", ["gradient", "input_x_gradient", "saliency", "lrp_epsilon", "deeplift", "guided_backprop"]
)
def test_api_many_targets_equal_one_at_a_time(method):
    ex = onnxplain.Explainer(small_cnn())
    x = np.random.default_rng(1).normal(size=(3, 3, 6, 6)).astype(np.float32)
    t = [[0, 4], [2, -1], [1, 1]]
    res = ex.run(x, method, target=t)
    for k in range(2):
        one = ex.run(x, method, target=np.array(t)[:, k])
        np.testing.assert_allclose(
            res.attribution[:, k], one.attribution, rtol=1e-5, atol=1e-6 * np.abs(one.attribution).max()
        )
        np.testing.assert_array_equal(res.target[:, k], one.target)
    assert res.attribution.shape[:2] == (3, 2)


def test_more_targets_than_one_pass_takes_run_in_chunks(monkeypatch):
    """K = 11 with 4 columns per pass: three folded runs (4 + 4 + 3), joined in order."""
    from onnxplain.runtime import explainer as E

    monkeypatch.setattr(E, "FOLD_CHUNK", 4)
    ex = onnxplain.Explainer(small_cnn())
    x = np.random.default_rng(2).normal(size=(2, 3, 6, 6)).astype(np.float32)
    t = np.array([[3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5]] * 2) % 5
    calls = []
    run_graph = ex.run_graph

    def counted(method, mode, feeds, *a, **k):
        calls.append(feeds["target"].shape[1])
        return run_graph(method, mode, feeds, *a, **k)

    monkeypatch.setattr(ex, "run_graph", counted)
    res = ex.run(x, "gradient", target=t)
    assert calls == [4, 4, 3]
    monkeypatch.setattr(ex, "run_graph", run_graph)
    assert res.attribution.shape[:2] == (2, 11)
    for k in range(11):
        one = ex.run(x, "gradient", target=t[:, k])
        np.testing.assert_allclose(res.attribution[:, k], one.attribution, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(res.target[:, k], t[:, k])


def test_one_row_of_targets_applies_to_every_item():
    ex = onnxplain.Explainer(small_cnn())
    x = np.random.default_rng(2).normal(size=(2, 3, 6, 6)).astype(np.float32)
    res = ex.run(x, "gradient", target=[[1, 3, 4]])
    assert res.target.tolist() == [[1, 3, 4], [1, 3, 4]]
    np.testing.assert_allclose(res.attribution[:, 1], ex.explain(x, "gradient", target=3), rtol=1e-5, atol=1e-7)


def test_static_batch_is_refused_in_the_graph_and_looped_by_the_api():
    m = small_cnn(batch=2)
    with pytest.raises(FoldError) as e:
        onnxplain.build(m, "gradient", Options(target_mode="classes"))
    assert "symbolic batch" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(FoldError):
        onnxplain.build(small_cnn(), "deeplift", Options(target_mode="classes"))
    ex = onnxplain.Explainer(m)
    x = np.random.default_rng(4).normal(size=(2, 3, 6, 6)).astype(np.float32)
    res = ex.run(x, "gradient", target=[[0, 2], [3, 4]])
    np.testing.assert_allclose(res.attribution[:, 1], ex.explain(x, "gradient", target=[2, 4]), rtol=1e-6)


def test_bad_many_targets_are_one_line_errors():
    ex = onnxplain.Explainer(small_cnn())
    x = np.zeros((2, 3, 6, 6), np.float32)
    with pytest.raises(OnnxplainError, match="shape \\[N, K\\]"):
        ex.run(x, "gradient", target=[[0, 1], [1, 2], [2, 3]])
    with pytest.raises(OnnxplainError, match="out of range"):
        ex.run(x, "gradient", target=[[0, 9], [1, 2]])
