"""Tiny models written with onnx.helper for API and contract tests (no torch)."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def tiny_cnn(batch="N", opset=17, classes=5, softmax=True, seed=0) -> onnx.ModelProto:
    """x[batch,3,8,8] -> Conv3x3 -> Relu -> Reshape -> Gemm -> logits (-> Softmax prob)."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "W1"),
        numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "B1"),
        numpy_helper.from_array((rng.normal(size=(classes, 256)) / 16).astype(np.float32), "W2"),
        numpy_helper.from_array(np.array([-1, 256], dtype=np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Reshape", ["r", "shape"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "W2"], ["logits"], transB=1, name="fc"),
    ]
    out = "logits"
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["prob"], axis=1, name="softmax"))
        out = "prob"
    graph = helper.make_graph(
        nodes,
        "tiny_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [batch, classes])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def with_ops(ops, opset=17) -> onnx.ModelProto:
    """x[1,4] -> op1 -> op2 -> ... (unary ops), for unsupported-op tests."""
    nodes, prev = [], "x"
    for i, op in enumerate(ops):
        nodes.append(helper.make_node(op, [prev], [f"t{i}"], name=f"{op.lower()}_{i}"))
        prev = f"t{i}"
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, 4])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
