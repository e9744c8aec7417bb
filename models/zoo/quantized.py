"""Quantised and low-precision zoo models (numpy, onnx and onnxruntime.quantization; no torch).

* ``quant_qdq.onnx``: a small CNN (Conv/Relu/MaxPool/Gemm) quantised by ``quantize_static`` in QDQ
  format, per-channel int8 weights;
* ``quant_qoperator.onnx``: the same CNN in QOperator format (QLinearConv, integer MaxPool/Flatten, QGemm);
* ``quant_qoperator_ops.onnx``: a CNN with LeakyRelu, a sigmoid gate, a residual Add, AveragePool,
  Concat, GlobalAveragePool and MatMul, in QOperator format (QLinearLeakyRelu, QLinearSigmoid,
  QLinearMul, QLinearAdd, QLinearAveragePool, QLinearConcat, QLinearGlobalAveragePool, QLinearMatMul);
* ``quant_dynamic.onnx``: the CNN by ``quantize_dynamic`` (DynamicQuantizeLinear, ConvInteger, MatMulInteger);
* ``cnn_fp16.onnx`` (opset 13, Softmax output) and ``cnn_bf16.onnx`` (opset 22, the first opset
  whose Conv and MaxPool take bfloat16): the CNN with float16/bfloat16 weights and inputs.

Calibration reads 8 random normal images (seeded). Not listed in manifest.json: tests/test_quantized.py
checks these models itself (finite differences do not apply to a quantised model).

    python models/zoo/quantized.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ZOO_DIR  # noqa: E402

MAX_BYTES = 200_000


def weights(rng, *shape):
    return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)


def cnn(opset=13, dtype=TensorProto.FLOAT, softmax=False) -> onnx.ModelProto:
    """Conv(3->8)/Relu/MaxPool, Conv(8->8)/Relu/MaxPool, Flatten, Gemm(128->10) on [N, 3, 16, 16]."""
    rng = np.random.default_rng(0)
    np_type = helper.tensor_dtype_to_np_dtype(dtype)
    arrays = {
        "w1": weights(rng, 8, 3, 3, 3),
        "b1": weights(rng, 8),
        "w2": weights(rng, 8, 8, 3, 3),
        "b2": weights(rng, 8),
        "w3": weights(rng, 10, 128),
        "b3": weights(rng, 10),
    }
    inits = [numpy_helper.from_array(a.astype(np_type), n) for n, a in arrays.items()]
    N = helper.make_node
    nodes = [
        N("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        N("Relu", ["c1"], ["r1"]),
        N("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        N("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        N("Relu", ["c2"], ["r2"]),
        N("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        N("Flatten", ["p2"], ["f"]),
        N("Gemm", ["f", "w3", "b3"], ["logits"], transB=1),
    ]
    out = "logits"
    if softmax:
        nodes.append(N("Softmax", ["logits"], ["probs"], axis=1))
        out = "probs"
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("x", dtype, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info(out, dtype, ["N", 10])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8 if opset < 21 else 10)


def ops_cnn() -> onnx.ModelProto:
    """Conv/LeakyRelu, x * sigmoid(Conv1x1(x)) + x, AveragePool || MaxPool, Concat, GlobalAveragePool, MatMul + b."""
    rng = np.random.default_rng(1)
    arrays = {
        "w1": weights(rng, 8, 3, 3, 3),
        "b1": weights(rng, 8),
        "w2": weights(rng, 8, 8, 1, 1),
        "w3": weights(rng, 16, 10),
        "b3": weights(rng, 10),
    }
    N = helper.make_node
    nodes = [
        N("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        N("LeakyRelu", ["c1"], ["l1"], alpha=0.1),
        N("Conv", ["l1", "w2"], ["c2"]),
        N("Sigmoid", ["c2"], ["s2"]),
        N("Mul", ["l1", "s2"], ["m"]),
        N("Add", ["m", "l1"], ["a"]),
        N("AveragePool", ["a"], ["ap"], kernel_shape=[2, 2], strides=[2, 2]),
        N("MaxPool", ["l1"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
        N("Concat", ["ap", "mp"], ["cat"], axis=1),
        N("GlobalAveragePool", ["cat"], ["gap"]),
        N("Flatten", ["gap"], ["f"]),
        N("MatMul", ["f", "w3"], ["mm"]),
        N("Add", ["mm", "b3"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "ops_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(a, n) for n, a in arrays.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def calibration(shape):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(2)
            self.items = iter([{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(8)])

        def get_next(self):
            return next(self.items, None)

    return Reader()


def save(model: onnx.ModelProto, name: str) -> None:
    onnx.checker.check_model(model)
    path = ZOO_DIR / name
    onnx.save_model(model, str(path))
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise ValueError(f"{name}: {size} bytes (limit {MAX_BYTES})")
    ops = sorted({(n.domain + ":" if n.domain else "") + n.op_type for n in model.graph.node})
    print(f"{name}: {size} bytes, ops {', '.join(ops)}")


def main() -> None:
    from onnxruntime.quantization import QuantFormat, quantize_dynamic, quantize_static

    with tempfile.TemporaryDirectory() as tmp:
        src, src_ops, out = Path(tmp, "cnn.onnx"), Path(tmp, "ops.onnx"), Path(tmp, "q.onnx")
        onnx.save_model(cnn(), str(src))
        onnx.save_model(ops_cnn(), str(src_ops))
        jobs = [
            (
                "quant_qdq.onnx",
                lambda: quantize_static(
                    src, out, calibration((1, 3, 16, 16)), quant_format=QuantFormat.QDQ, per_channel=True
                ),
            ),
            (
                "quant_qoperator.onnx",
                lambda: quantize_static(src, out, calibration((1, 3, 16, 16)), quant_format=QuantFormat.QOperator),
            ),
            (
                "quant_qoperator_ops.onnx",
                lambda: quantize_static(src_ops, out, calibration((1, 3, 8, 8)), quant_format=QuantFormat.QOperator),
            ),
            ("quant_dynamic.onnx", lambda: quantize_dynamic(src, out)),
        ]
        for name, job in jobs:
            job()
            save(onnx.load(str(out)), name)
    save(cnn(13, TensorProto.FLOAT16, softmax=True), "cnn_fp16.onnx")
    save(cnn(22, TensorProto.BFLOAT16), "cnn_bf16.onnx")


if __name__ == "__main__":
    main()
