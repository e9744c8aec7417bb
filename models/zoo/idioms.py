"""Exporter idioms for the test zoo: activations and LayerNorm spelled out in primitives (no torch needed).

Each model is written with onnx.helper the way an exporter writes it, with random weights from a
fixed seed, so that tests can check that canonicalisation fuses the pieces back into single ops
(onnxplain/graph/fuse.py) and that the modified rules then apply:

* paddle_hardswish.onnx      a bias-free CNN with Paddle's HardSwish x * Clip(x + 3, 0, 6) / 6 (Clip
                             bounds as inputs, / 6 and * 1/6, ReLU6 as Min(Max(., 0), 6)) and an SE
                             block gated by Clip(x + 3, 0, 6) / 6 (HardSigmoid);
* silu_decomposed.onnx       a CNN with PyTorch's SiLU x * Sigmoid(x) (both operand orders), an SE
                             gate x * Sigmoid(fc(...)) that must stay, and QuickGELU x * Sigmoid(1.702 x);
* gelu_erf_decomposed.onnx   a bias-free token MLP with three orderings of 0.5 x (1 + erf(x / sqrt 2));
* gelu_tanh_decomposed.onnx  a bias-free token MLP with two spellings of the tanh GELU (x*x*x and Pow);
* layernorm_decomposed.onnx  a token MLP with LayerNorm spelled out twice (Pow and Div; Mul and
                             Reciprocal, without beta).

All at opsets 11-13, below the opsets of the fused ops, so the exported graphs also exercise the
lowering back to primitives.

    python models/zoo/idioms.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save_checked, update_manifest  # noqa: E402

RNG = np.random.default_rng(2024)
F32 = TensorProto.FLOAT


class Graph:
    """A tiny emitter: ``g.op("Mul", a, b)`` adds a node and returns its output name."""

    def __init__(self, name: str):
        self.name, self.nodes, self.inits, self.k = name, [], [], 0

    def op(self, op_type: str, *inputs, scope: str = "", **attrs) -> str:
        self.k += 1
        out = f"{scope}/{op_type}_{self.k}_output_0"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=f"{scope}/{op_type}_{self.k}", **attrs))
        return out

    def const(self, value, name: str | None = None, shape=None) -> str:
        self.k += 1
        name = name or f"const_{self.k}"
        arr = np.asarray(value, dtype=np.float32)
        self.inits.append(numpy_helper.from_array(arr.reshape(shape) if shape is not None else arr, name))
        return name

    def weight(self, *shape, name: str) -> str:
        fan_in = int(np.prod(shape[1:])) if len(shape) == 4 else shape[0]
        return self.const(RNG.standard_normal(shape) * np.sqrt(2.0 / fan_in), name)

    def model(self, inp, out, opset: int) -> onnx.ModelProto:
        (iname, ishape), (oname, oshape) = inp, out
        g = helper.make_graph(
            self.nodes,
            self.name,
            [helper.make_tensor_value_info(iname, F32, ishape)],
            [helper.make_tensor_value_info(oname, F32, oshape)],
            self.inits,
        )
        m = helper.make_model(
            g, opset_imports=[helper.make_opsetid("", opset)], ir_version=7, producer_name="onnxplain-zoo/idioms"
        )
        inferred = onnx.shape_inference.infer_shapes(m, strict_mode=True)
        m.graph.value_info.extend(inferred.graph.value_info)
        return m


# ---- Paddle HardSwish -------------------------------------------------------------------------------
def paddle_hardswish() -> onnx.ModelProto:
    """paddle2onnx's hardswish: Add(x, 3) -> Clip(., 0, 6) -> Mul(x, .) -> Div(., 6); hardsigmoid likewise."""
    g = Graph("paddle_hardswish")
    three, zero, six = g.const([3.0], "three"), g.const(0.0, "zero"), g.const(6.0, "six")
    sixth = g.const([1 / 6], "sixth")

    def hardswish_div(x, s):
        clip = g.op("Clip", g.op("Add", x, three, scope=s), zero, six, scope=s)
        return g.op("Div", g.op("Mul", x, clip, scope=s), six, scope=s)

    def hardswish_sixth(x, s):
        clip = g.op("Clip", g.op("Add", three, x, scope=s), zero, six, scope=s)
        return g.op("Mul", g.op("Mul", clip, x, scope=s), sixth, scope=s)

    def hardswish_minmax(x, s):
        relu6 = g.op("Min", g.op("Max", g.op("Add", x, three, scope=s), zero, scope=s), six, scope=s)
        return g.op("Div", g.op("Mul", x, relu6, scope=s), six, scope=s)

    def hardsigmoid(x, s):
        return g.op("Div", g.op("Clip", g.op("Add", x, three, scope=s), zero, six, scope=s), six, scope=s)

    h = g.op("Conv", "x", g.weight(8, 3, 3, 3, name="conv1.w"), pads=[1, 1, 1, 1], scope="/conv1")
    h = hardswish_div(h, "/act1")
    h = g.op("Conv", h, g.weight(8, 8, 3, 3, name="conv2.w"), pads=[1, 1, 1, 1], strides=[2, 2], scope="/conv2")
    h = hardswish_sixth(h, "/act2")
    se = g.op("GlobalAveragePool", h, scope="/se")
    se = g.op("Relu", g.op("Conv", se, g.weight(4, 8, 1, 1, name="se.fc1.w"), scope="/se/fc1"), scope="/se")
    gate = hardsigmoid(g.op("Conv", se, g.weight(8, 4, 1, 1, name="se.fc2.w"), scope="/se/fc2"), "/se/gate")
    h = g.op("Mul", h, gate, scope="/se")
    h = g.op("Conv", h, g.weight(8, 8, 3, 3, name="conv3.w"), pads=[1, 1, 1, 1], scope="/conv3")
    h = hardswish_minmax(h, "/act3")
    h = g.op("Flatten", g.op("GlobalAveragePool", h, scope="/pool"), axis=1, scope="/pool")
    g.nodes.append(helper.make_node("Gemm", [h, g.weight(10, 8, name="fc.w")], ["logits"], name="/fc/Gemm", transB=1))
    return g.model(("x", ["N", 3, 16, 16]), ("logits", ["N", 10]), 11)


# ---- PyTorch SiLU and QuickGELU ------------------------------------------------------------------
def silu_decomposed() -> onnx.ModelProto:
    g = Graph("silu_decomposed")
    h = g.op(
        "Conv",
        "x",
        g.weight(8, 3, 3, 3, name="conv1.w"),
        g.const(RNG.normal(size=8) * 0.1, "conv1.b"),
        pads=[1, 1, 1, 1],
        scope="/conv1",
    )
    h = g.op("Mul", h, g.op("Sigmoid", h, scope="/act1"), scope="/act1")
    h = g.op(
        "Conv",
        h,
        g.weight(8, 8, 3, 3, name="conv2.w"),
        g.const(RNG.normal(size=8) * 0.1, "conv2.b"),
        pads=[1, 1, 1, 1],
        strides=[2, 2],
        scope="/conv2",
    )
    h = g.op("Mul", g.op("Sigmoid", h, scope="/act2"), h, scope="/act2")
    se = g.op("Conv", g.op("GlobalAveragePool", h, scope="/se"), g.weight(8, 8, 1, 1, name="se.w"), scope="/se/fc")
    h = g.op("Mul", h, g.op("Sigmoid", se, scope="/se"), scope="/se")  # an SE gate: not x * sigmoid(x)
    h = g.op("Flatten", g.op("GlobalAveragePool", h, scope="/pool"), axis=1, scope="/pool")
    h = g.op(
        "Gemm", h, g.weight(16, 8, name="fc1.w"), g.const(RNG.normal(size=16) * 0.1, "fc1.b"), transB=1, scope="/fc1"
    )
    h = g.op(
        "Mul",
        h,
        g.op("Sigmoid", g.op("Mul", h, g.const(1.702, "quick"), scope="/quick_gelu"), scope="/quick_gelu"),
        scope="/quick_gelu",
    )
    g.nodes.append(
        helper.make_node(
            "Gemm",
            [h, g.weight(10, 16, name="fc2.w"), g.const(np.zeros(10), "fc2.b")],
            ["logits"],
            name="/fc2/Gemm",
            transB=1,
        )
    )
    return g.model(("x", ["N", 3, 16, 16]), ("logits", ["N", 10]), 13)


# ---- GELU ------------------------------------------------------------------------------------------
def _token_mlp(name: str, acts, opset: int = 13) -> onnx.ModelProto:
    """x [N, 4, 8] -> (MatMul -> act) per act -> mean over tokens -> MatMul -> logits [N, 5]; no biases."""
    g = Graph(name)
    h, width = "x", 8
    for i, act in enumerate(acts):
        h = act(g, g.op("MatMul", h, g.weight(width, 16, name=f"fc{i}.w"), scope=f"/fc{i}"), f"/act{i}")
        width = 16
    h = g.op("ReduceMean", h, axes=[1], keepdims=0, scope="/pool")
    g.nodes.append(helper.make_node("MatMul", [h, g.weight(16, 5, name="head.w")], ["logits"], name="/head/MatMul"))
    return g.model(("x", ["N", 4, 8]), ("logits", ["N", 5]), opset)


def gelu_torch(g, x, s):
    """torch.onnx (TorchScript): Mul(Mul(x, Add(Erf(Div(x, 1.4142135)), 1)), 0.5)."""
    erf = g.op("Erf", g.op("Div", x, g.const(1.4142135), scope=s), scope=s)
    return g.op("Mul", g.op("Mul", x, g.op("Add", erf, g.const(1.0), scope=s), scope=s), g.const(0.5), scope=s)


def gelu_half_first(g, x, s):
    """Mul(Mul(x, 0.5), Add(1, Erf(Div(x, 1.4142135))))."""
    erf = g.op("Erf", g.op("Div", x, g.const(1.4142135), scope=s), scope=s)
    return g.op("Mul", g.op("Mul", x, g.const(0.5), scope=s), g.op("Add", g.const(1.0), erf, scope=s), scope=s)


def gelu_cdf(g, x, s):
    """x * Phi(x) with Phi = Mul(0.5, Add(Erf(Mul(x, 0.70710677)), 1))."""
    erf = g.op("Erf", g.op("Mul", x, g.const(0.70710677), scope=s), scope=s)
    return g.op("Mul", x, g.op("Mul", g.const(0.5), g.op("Add", erf, g.const(1.0), scope=s), scope=s), scope=s)


def gelu_tanh_torch(g, x, s):
    """torch.onnx (TorchScript), approximate='tanh': x*x*x, 0.044715, sqrt(2/pi), Tanh, 1 +, x *, 0.5 *."""
    cube = g.op("Mul", x, g.op("Mul", x, x, scope=s), scope=s)
    inner = g.op("Add", x, g.op("Mul", g.const(0.044715), cube, scope=s), scope=s)
    t = g.op("Tanh", g.op("Mul", g.const(0.7978846), inner, scope=s), scope=s)
    return g.op("Mul", g.const(0.5), g.op("Mul", x, g.op("Add", g.const(1.0), t, scope=s), scope=s), scope=s)


def gelu_tanh_pow(g, x, s):
    """Mul(Mul(0.5, x), Add(Tanh(Mul(Add(x, Mul(Pow(x, 3), 0.044715)), 0.7978846)), 1))."""
    inner = g.op("Add", x, g.op("Mul", g.op("Pow", x, g.const(3.0), scope=s), g.const(0.044715), scope=s), scope=s)
    t = g.op("Tanh", g.op("Mul", inner, g.const(0.7978846), scope=s), scope=s)
    return g.op("Mul", g.op("Mul", g.const(0.5), x, scope=s), g.op("Add", t, g.const(1.0), scope=s), scope=s)


def gelu_erf_decomposed() -> onnx.ModelProto:
    return _token_mlp("gelu_erf_decomposed", [gelu_torch, gelu_half_first, gelu_cdf])


def gelu_tanh_decomposed() -> onnx.ModelProto:
    return _token_mlp("gelu_tanh_decomposed", [gelu_tanh_torch, gelu_tanh_pow])


# ---- LayerNorm -------------------------------------------------------------------------------------
def layernorm_pow_div(g, x, s):
    """torch.onnx (TorchScript) before opset 17: Sub, Pow 2, ReduceMean, Add eps, Sqrt, Div, Mul gamma, Add beta."""
    d = g.op("Sub", x, g.op("ReduceMean", x, axes=[-1], scope=s), scope=s)
    var = g.op("ReduceMean", g.op("Pow", d, g.const(2.0), scope=s), axes=[-1], scope=s)
    n = g.op("Div", d, g.op("Sqrt", g.op("Add", var, g.const(1e-5), scope=s), scope=s), scope=s)
    gamma = g.const(1 + 0.3 * RNG.standard_normal(16), f"{s}.gamma")
    beta = g.const(0.3 * RNG.standard_normal(16), f"{s}.beta")
    return g.op("Add", g.op("Mul", n, gamma, scope=s), beta, scope=s)


def layernorm_mul_reciprocal(g, x, s):
    """Mul(d, d) for the square, Mul by Reciprocal(Sqrt(.)), gamma first, no beta."""
    d = g.op("Sub", x, g.op("ReduceMean", x, axes=[2], scope=s), scope=s)
    var = g.op("ReduceMean", g.op("Mul", d, d, scope=s), axes=[2], scope=s)
    inv = g.op("Reciprocal", g.op("Sqrt", g.op("Add", g.const(1e-6), var, scope=s), scope=s), scope=s)
    gamma = g.const(1 + 0.3 * RNG.standard_normal(16), f"{s}.gamma")
    return g.op("Mul", gamma, g.op("Mul", inv, d, scope=s), scope=s)


def layernorm_decomposed() -> onnx.ModelProto:
    def relu_ln(g, x, s):
        return layernorm_mul_reciprocal(g, g.op("Relu", x, scope=f"{s}_relu"), s)

    return _token_mlp("layernorm_decomposed", [layernorm_pow_div, relu_ln])


MODELS = [
    ("paddle_hardswish.onnx", paddle_hardswish, [2, 3, 16, 16], "logits [N,10]; bias-free, for LRP conservation"),
    ("silu_decomposed.onnx", silu_decomposed, [2, 3, 16, 16], "logits [N,10]"),
    ("gelu_erf_decomposed.onnx", gelu_erf_decomposed, [2, 4, 8], "logits [N,5]; bias-free"),
    ("gelu_tanh_decomposed.onnx", gelu_tanh_decomposed, [2, 4, 8], "logits [N,5]; bias-free"),
    ("layernorm_decomposed.onnx", layernorm_decomposed, [2, 4, 8], "logits [N,5]"),
]


def main() -> None:
    entries = []
    for fname, make, shape, note in MODELS:
        model = make()
        save_checked(model, fname)
        entries.append(
            {
                "file": fname,
                "family": "idioms",
                "source": "idioms",
                "opset": model.opset_import[0].version,
                "input": "x",
                "input_shape": shape,
                "dynamic_batch": True,
                "output": "logits",
                "logits_note": note,
            }
        )
        print(f"wrote {fname}")
    update_manifest(entries, {"idioms"})


if __name__ == "__main__":
    main()
