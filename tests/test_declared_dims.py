"""Declared dimensions an exporter got wrong: paddle2onnx's -1 for a dynamic axis, and a batch that onnx's
data propagation (through Shape -> Cast -> Slice -> Concat -> Reshape) declares as 1. The explanation must
run at any batch size and keep completeness (PP-OCR's text-direction classifier has both)."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxplain
from onnxplain.runtime.session import make_session


def paddle_like(classes=4, channels=8):
    """x[-1, 3, ?, ?] -> Conv -> Relu -> MaxPool -> GlobalAveragePool -> Reshape to [Shape[0], C] (the
    batch read through an int32 Cast, as paddle2onnx writes it) -> MatMul -> Add -> Softmax."""
    r = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(r.normal(size=(channels, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(r.normal(size=(channels, classes)).astype(np.float32), "fc"),
        numpy_helper.from_array(r.normal(size=(classes,)).astype(np.float32), "bias"),
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([1], np.int64), "one"),
        numpy_helper.from_array(np.array([channels], np.int64), "c"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("MaxPool", ["relu"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["pool"], ["gap"]),
        helper.make_node("Shape", ["gap"], ["shape"]),
        helper.make_node("Cast", ["shape"], ["shape32"], to=TensorProto.INT32),
        helper.make_node("Slice", ["shape32", "zero", "one", "zero"], ["n32"]),
        helper.make_node("Cast", ["n32"], ["n"], to=TensorProto.INT64),
        helper.make_node("Concat", ["n", "c"], ["target_shape"], axis=0),
        helper.make_node("Reshape", ["gap", "target_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "fc"], ["mm"]),
        helper.make_node("Add", ["mm", "bias"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, "?", "?"])
    x.type.tensor_type.shape.dim[2].Clear()
    x.type.tensor_type.shape.dim[3].Clear()
    y = helper.make_tensor_value_info("probs", TensorProto.FLOAT, [-1, classes])
    g = helper.make_graph(nodes, "paddle_like", [x], [y], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 11)], ir_version=7)


@pytest.mark.parametrize("method", ["gradient", "lrp_epsilon", "deeplift"])
def test_minus_one_batch_and_data_propagated_batch_of_one(method):
    model = paddle_like()
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == -1
    logits_model = onnx.ModelProto()
    logits_model.CopyFrom(model)
    logits_model.graph.output.append(helper.make_empty_tensor_value_info("logits"))
    run = make_session(logits_model)
    ex = onnxplain.Explainer(model)
    for n in (1, 3, 2):  # one explainer, batch sizes changing between calls
        x = np.random.default_rng(n).normal(size=(n, 3, 12, 16)).astype(np.float32)
        res = ex.run(x, method)
        assert res.attribution.shape == x.shape and np.isfinite(res.attribution).all()
        rows = np.arange(n)
        if method == "deeplift":  # completeness: the map sums to logit(x) - logit(0) for the explained class
            logits, zero = (run.run(["logits"], {"x": v})[0][rows, res.target] for v in (x, 0 * x))
            want = logits - zero
            np.testing.assert_allclose(res.attribution.reshape(n, -1).sum(1), want, rtol=1e-4, atol=1e-5)
        if method == "gradient":  # the arg-max of each item's logits
            np.testing.assert_array_equal(res.target, run.run(["logits"], {"x": x})[0].argmax(1))


def test_probe_skips_sizes_the_model_refuses_and_names_the_varying_axis():
    """probe_shapes with batches 1 and 2: an axis that differs between the runs gets the batch symbol; a model
    whose side input fixes the batch (a state of batch 1, as silero-vad's) refuses batch 2, and the probe then
    keeps the first run's shapes instead of failing."""
    from onnxplain.graph.specialise import probe_shapes

    def model(concat):
        nodes = [helper.make_node("Relu", ["x"], ["r"])]
        nodes.append(
            helper.make_node("Concat", ["r", "s"], ["y"], axis=1)
            if concat
            else helper.make_node("Add", ["r", "s"], ["y"])
        )
        g = helper.make_graph(
            nodes,
            "g",
            [
                helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
                helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 4]),
            ],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        )
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)

    feeds = [{"x": np.zeros((n, 4), np.float32), "s": np.zeros((1, 4), np.float32)} for n in (1, 2)]
    dims = lambda m: [d.dim_value or d.dim_param for d in m.graph.value_info[0].type.tensor_type.shape.dim]  # noqa: E731
    assert dims(probe_shapes(model(False), feeds, ["r"], varying="N")) == ["N", 4]  # Add broadcasts: batch 2 runs
    assert dims(probe_shapes(model(True), feeds, ["r"], varying="N")) == [1, 4]  # Concat refuses batch 2
