"""What the Explainer caches between calls (input checks per shape and dtype, the activation walk, the
guessed task, output names) must not change what a call checks or returns."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxplain import Explainer, OnnxplainError

rng = np.random.default_rng(0)


def lower_half_model() -> onnx.ModelProto:
    """logits = flatten(x[:, :, 8:, :]) @ W: the gradient is exactly zero on the first 8 rows (128 values)."""
    w = rng.normal(size=(128, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["lower"]),
        helper.make_node("Flatten", ["lower"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W"], ["logits"]),
    ]
    inits = [
        numpy_helper.from_array(np.array([8], np.int64), "starts"),
        numpy_helper.from_array(np.array([16], np.int64), "ends"),
        numpy_helper.from_array(np.array([2], np.int64), "axes"),
        numpy_helper.from_array(w, "W"),
    ]
    g = helper.make_graph(
        nodes,
        "lower_half",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_map_zero_at_its_head_is_not_taken_for_all_zero():
    ex = Explainer(lower_half_model())
    x = rng.normal(size=(2, 1, 16, 16)).astype(np.float32)
    for _ in range(2):
        a = ex.explain(x, "gradient", target=[1, 3])
        assert not a[:, :, :8].any()
        assert np.abs(a[:, :, 8:]).min() > 0  # every lower value reaches the logits through W


def test_checks_still_run_after_a_shape_was_seen():
    ex = Explainer(lower_half_model())
    x = rng.normal(size=(1, 1, 16, 16)).astype(np.float32)
    ex.explain(x)
    bad = x.copy()
    bad[0, 0, 3, 3] = np.nan
    with pytest.raises(OnnxplainError, match="NaN or infinite"):
        ex.explain(bad)
    with pytest.raises(OnnxplainError, match="expects shape"):
        ex.explain(rng.normal(size=(1, 1, 16, 15)).astype(np.float32))
    with pytest.raises(OnnxplainError, match="must be a float array"):
        ex.explain(np.zeros((1, 1, 16, 16), np.int32))
    with pytest.raises(OnnxplainError, match="out of range"):
        ex.explain(x, target=4)
    ex.explain(x.astype(np.float64))  # a new dtype of a seen shape: converted, as before


def test_memory_limit_is_read_on_every_call():
    ex = Explainer(lower_half_model())
    x = rng.normal(size=(1, 1, 16, 16)).astype(np.float32)
    ex.explain(x)
    ex.max_memory = 64  # bytes: below the activations of one item
    with pytest.raises(OnnxplainError, match="memory limit"):
        ex.explain(x)
