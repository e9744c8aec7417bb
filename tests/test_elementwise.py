"""Oracle tests for elementwise arithmetic VJPs (finite differences in float64), with broadcasting
(static and symbolic shapes, so the walker's unbroadcast is exercised) and values at kinks/ties."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from oracle import Case, X, assert_case, case, gradient_graph

from onnxplain.runtime.session import make_session

r = np.random.default_rng(3)
n = r.normal
f32 = np.float32


def pos(shape, lo=0.5):
    """Positive values (for Sqrt, Log, Pow bases)."""
    return lo + r.uniform(size=shape) * 2


def nonzero(shape, eps=0.2):
    v = n(size=shape)
    return np.where(np.abs(v) < eps, np.where(v >= 0, 2 * eps, -2 * eps), v)


def cast_chain(opset=17):
    """x (float32) -> Cast(to=DOUBLE) -> Cast(to=FLOAT) -> y: the cotangent is cast back twice."""
    nodes = [
        helper.make_node("Cast", ["x0"], ["t"], to=TensorProto.DOUBLE),
        helper.make_node("Cast", ["t"], ["y0"], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes,
        "cast_chain",
        [helper.make_tensor_value_info("x0", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y0", TensorProto.FLOAT, [2, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return Case("Cast", model, {"x0": n(size=(2, 3)).astype(f32)}, ["x0"], id=f"cast-f32-f64-f32-chain-opset{opset}")


CASES = [
    # Add / Sum: broadcasting of every kind
    case("Add", X(n(size=(2, 3, 4))), X(n(size=(2, 3, 4))), opset=11, id="add-same-shape-opset11"),
    case("Add", X(n(size=(2, 3, 4))), X(n(size=(4,))), opset=13, id="add-trailing-broadcast"),
    case("Add", X(n(size=(2, 1, 4))), X(n(size=(3, 1))), opset=14, id="add-both-broadcast"),
    case("Add", X(n(size=(2, 3))), X(f32(0.7)), id="add-scalar"),
    case("Add", X(n(size=(2, 3))), n(size=(3,)), id="add-const-other"),
    case(
        "Sum", X(n(size=(2, 3, 4))), X(n(size=(3, 1))), X(n(size=(4,))), opset=11, id="sum-variadic3-broadcast-opset11"
    ),
    case(
        "Sum",
        X(n(size=(2, 1))),
        X(n(size=(1, 3))),
        X(f32(1.5)),
        X(n(size=(2, 3))),
        opset=13,
        id="sum-variadic4-opset13",
    ),
    case("Sum", X(n(size=(2, 3))), opset=13, id="sum-single"),
    # Sub / Mul / Div
    case("Sub", X(n(size=(2, 3, 4))), X(n(size=(4,))), opset=11, id="sub-trailing-broadcast-opset11"),
    case("Sub", X(f32(0.3)), X(n(size=(2, 3))), opset=14, id="sub-scalar-left"),
    case("Mul", X(n(size=(2, 1, 4))), X(n(size=(3, 1))), opset=11, id="mul-both-broadcast-opset11"),
    case("Mul", X(n(size=(2, 3))), X(f32(-1.3)), opset=14, id="mul-scalar"),
    case("Mul", X(n(size=(2, 3))), X(n(size=(2, 3))), id="mul-same-shape"),
    case("Div", X(n(size=(2, 3, 4))), X(nonzero((3, 1))), opset=11, id="div-broadcast-opset11"),
    case("Div", X(f32(2.0)), X(nonzero((2, 3))), opset=14, id="div-scalar-numerator"),
    case("Neg", X(n(size=(2, 3))), opset=11, id="neg-opset11"),
    case("Neg", X(n(size=(2, 3))), opset=13, id="neg-opset13"),
    # Pow: constant float / int64 exponents, and a differentiable exponent with a positive base
    case("Pow", X(pos((2, 3))), f32(2.5), opset=11, id="pow-const-float-exponent-opset11"),
    case("Pow", X(n(size=(2, 3))), np.int64(3), opset=12, id="pow-const-int64-exponent-opset12"),
    case("Pow", X(n(size=(2, 3))), np.array([2, 3, 4], np.int64), opset=15, id="pow-const-int64-vector-exponent"),
    case("Pow", X(pos((2, 3))), X(n(size=(2, 3))), opset=13, id="pow-differentiable-exponent"),
    case("Pow", X(pos((2, 1, 3))), X(n(size=(4, 1))), opset=15, id="pow-differentiable-exponent-broadcast"),
    # unary
    case("Sqrt", X(pos((2, 3))), opset=11, id="sqrt-opset11"),
    case("Sqrt", X(pos((2, 3))), opset=13, id="sqrt-opset13"),
    case("Exp", X(n(size=(2, 3))), opset=11, id="exp-opset11"),
    case("Exp", X(n(size=(2, 3))), opset=13, id="exp-opset13"),
    case("Log", X(pos((2, 3))), opset=11, id="log-opset11"),
    case("Log", X(pos((2, 3))), opset=13, id="log-opset13"),
    case("Abs", X(nonzero((2, 3))), opset=11, id="abs-opset11"),
    case("Abs", X(nonzero((2, 3))), opset=13, id="abs-opset13"),
    case("Reciprocal", X(nonzero((2, 3), 0.5)), opset=11, id="reciprocal-opset11"),
    case("Reciprocal", X(nonzero((2, 3), 0.5)), opset=13, id="reciprocal-opset13"),
    case("Identity", X(n(size=(2, 3))), opset=11, id="identity-opset11"),
    case("Identity", X(n(size=(2, 3))), opset=16, id="identity-opset16"),
    # Dropout at inference is the identity: ratio attribute (opset 11), ratio input (12+)
    case("Dropout", X(n(size=(2, 3))), opset=11, ratio=0.5, id="dropout-opset11-ratio-attr"),
    case("Dropout", X(n(size=(2, 3))), f32(0.3), opset=12, id="dropout-opset12-ratio-input"),
    case("Dropout", X(n(size=(2, 3))), f32(0.3), np.array(False), opset=13, id="dropout-opset13-ratio-training-mode"),
    case("Dropout", X(n(size=(2, 3))), opset=22, id="dropout-opset22-defaults"),
    # Cast between float types
    case("Cast", X(n(size=(2, 3))), to=TensorProto.FLOAT, opset=11, id="cast-to-float-opset11"),
    case("Cast", X(n(size=(2, 3))), to=TensorProto.FLOAT, opset=19, id="cast-to-float-opset19"),
    case("CastLike", X(n(size=(2, 3))), np.zeros(1, np.float32), opset=15, id="castlike-opset15"),
    case("CastLike", X(n(size=(2, 3))), np.zeros(1, np.float64), opset=19, id="castlike-to-double-opset19"),
    cast_chain(13),
    # Where: constant bool condition, both branches differentiable, all three broadcast
    case("Where", r.uniform(size=(2, 3)) > 0.5, X(n(size=(2, 3))), X(n(size=(2, 3))), opset=11, id="where-same-shape"),
    case(
        "Where",
        r.uniform(size=(3, 1)) > 0.5,
        X(n(size=(2, 1, 4))),
        X(n(size=(4,))),
        opset=16,
        id="where-broadcast-all-three",
    ),
    case("Where", np.array(True), X(n(size=(2, 3))), X(f32(0.5)), id="where-scalar-condition"),
    # Max / Min: variadic, broadcasting (no ties here; ties are in test_max_min_ties)
    case("Max", X(n(size=(2, 3, 4))), X(n(size=(4,))), opset=11, id="max-broadcast-opset11"),
    case("Max", X(n(size=(2, 1, 4))), X(n(size=(3, 1))), X(f32(0.1)), opset=13, id="max-variadic3-broadcast-opset13"),
    case("Max", X(n(size=(2, 3))), opset=12, id="max-single"),
    case("Min", X(n(size=(2, 3, 4))), X(n(size=(3, 1))), opset=11, id="min-broadcast-opset11"),
    case("Min", X(n(size=(2, 3))), X(n(size=(2, 3))), X(n(size=(3,))), opset=13, id="min-variadic3-opset13"),
    case("Min", X(n(size=(2, 3))), n(size=(2, 3)), opset=12, id="min-const-other"),
    # symbolic dimensions: comparable ones (static reduction), and incomparable ones (Shape-driven)
    case("Add", X(n(size=(2, 3, 4))), X(n(size=(4,))), opset=13, dims={"x0": ["N", 3, 4]}, id="add-symbolic-batch"),
    case(
        "Mul", X(n(size=(2, 1, 4))), X(n(size=(3, 1))), opset=13, dims={"x0": ["N", 1, 4]}, id="mul-symbolic-batch-both"
    ),
    case(
        "Mul",
        X(n(size=(1, 3))),
        X(n(size=(2, 3))),
        opset=13,
        dims={"x0": ["N", 3], "x1": ["M", 3]},
        id="mul-incomparable-symbolic-dims",
    ),
    case(
        "Sub",
        X(n(size=(2, 1))),
        X(n(size=(1, 3))),
        opset=17,
        dims={"x0": ["A", "B"], "x1": ["C", "D"]},
        id="sub-all-dims-symbolic",
    ),
    case(
        "Max",
        X(n(size=(2, 3))),
        X(n(size=(1, 3))),
        opset=13,
        dims={"x0": ["N", 3], "x1": ["M", 3]},
        id="max-incomparable-symbolic-dims",
    ),
    case(
        "Where",
        r.uniform(size=(3,)) > 0.5,
        X(n(size=(2, 3))),
        X(n(size=(1, 3))),
        opset=16,
        dims={"x1": ["N", 3], "x2": ["M", 3]},
        id="where-incomparable-symbolic-dims",
    ),
]


@pytest.mark.parametrize("c", CASES, ids=repr)
def test_vjp(c):
    assert_case(c)


# ---- exact gradients at kinks and ties: PyTorch's convention ---------------------------------


def exported_grad(c, wrt="x0"):
    """d sum(y) / d wrt from the exported graph, run in onnxruntime."""
    y = make_session(c.model).run([c.output], c.feeds)[0]
    sess = make_session(gradient_graph(c.model, wrt, c.output))
    return sess.run(["attribution"], {**c.feeds, "target_weights": np.ones_like(y)})[0]


def test_abs_at_zero():
    """Abs'(0) = sign(0) = 0."""
    x = np.array([-2, -0.0, 0, 0.5], f32)
    np.testing.assert_array_equal(exported_grad(case("Abs", X(x))), np.sign(x))


@pytest.mark.parametrize("op,better", [("Max", np.greater), ("Min", np.less)])
def test_max_min_ties(op, better):
    """Ties split the gradient evenly (torch.maximum/minimum: grad / 2 for two tied inputs)."""
    a = np.array([1, 2, 3, -1], f32)
    b = np.array([1, 1, 4, -1], f32)
    c = case(op, X(a), X(b))
    ga = np.where(a == b, 0.5, better(a, b) * 1.0)
    np.testing.assert_allclose(exported_grad(c, "x0"), ga)
    np.testing.assert_allclose(exported_grad(c, "x1"), 1 - ga)


def test_max_three_way_tie_with_broadcast():
    """Three inputs tied: a third each; broadcast inputs collect their shares over the broadcast axes."""
    a = np.array([[0, 2], [0, 5]], f32)  # [2, 2]
    b = np.array([0, 2], f32)  # [2] -> broadcast over rows
    s = f32(0)  # scalar
    c = case("Max", X(a), X(b), X(s))
    y = np.maximum(np.maximum(a, b), s)
    hits = [(a == y) * 1.0, np.broadcast_to(b == y, y.shape) * 1.0, (s == y) * 1.0]
    share = 1 / sum(hits)
    np.testing.assert_allclose(exported_grad(c, "x0"), hits[0] * share, rtol=1e-6)
    np.testing.assert_allclose(exported_grad(c, "x1"), (hits[1] * share).sum(0), rtol=1e-6)
    np.testing.assert_allclose(exported_grad(c, "x2"), (hits[2] * share).sum(), rtol=1e-6)
