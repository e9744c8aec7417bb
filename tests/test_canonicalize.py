"""Canonicalisation: BN folding is exact, pass-through nodes go, logits are found."""

import numpy as np
from onnx import TensorProto, helper, numpy_helper
from oracle import run_ref, to_float64

from onnxplain.graph.canonicalize import canonicalize, export_graph, find_logits

rng = np.random.default_rng(0)


def conv_bn(second_consumer=False, with_bias=True):
    inits = [
        numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "gamma"),
        numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "beta"),
        numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "mean"),
        numpy_helper.from_array((rng.random(4) + 0.5).astype(np.float32), "var"),
    ]
    conv_in = ["x", "W"]
    if with_bias:
        inits.append(numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "B"))
        conv_in.append("B")
    nodes = [
        helper.make_node("Conv", conv_in, ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Dropout", ["c"], ["d"]),
        helper.make_node("BatchNormalization", ["d", "gamma", "beta", "mean", "var"], ["bn"], epsilon=1e-3),
        helper.make_node("Sigmoid", ["bn"], ["y"]),
    ]
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])]
    if second_consumer:
        nodes.append(helper.make_node("Neg", ["d"], ["side"]))
        outs.append(helper.make_tensor_value_info("side", TensorProto.FLOAT, [1, 4, 6, 6]))
    g = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])], outs, inits
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 15)], ir_version=8)


def ops(can):
    return [n.op for n in can.graph.nodes]


def test_batchnorm_folds_exactly_and_dropout_goes():
    for bias in (True, False):
        m = to_float64(conv_bn(with_bias=bias))
        can = canonicalize(m)
        assert ops(can) == ["Conv", "Sigmoid"]
        x = rng.normal(size=(1, 3, 6, 6))
        want = run_ref(m, {"x": x})["y"]
        got = run_ref(export_graph(can.graph, m), {"x": x})["y"]
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_batchnorm_kept_when_conv_output_is_shared():
    can = canonicalize(conv_bn(second_consumer=True))
    assert "BatchNormalization" in ops(can)
    assert "BatchNormalization" in ops(canonicalize(conv_bn(), fold_bn=False))


def test_find_logits_strips_squashing():
    can = canonicalize(conv_bn())
    out = can.output()
    logits, stripped = find_logits(can.graph, out)
    assert stripped == ["Sigmoid"] and logits.name == "bn"
