"""Oracle tests for Reduce* VJPs (finite differences in float64), ties and zeros.

Every op is tried with ``axes`` as an attribute (before opset 13 for ReduceSum, 18 for the rest)
and as an input, keepdims 0/1, negative axes, no axes (all), noop_with_empty_axes, and a
symbolic batch dimension.
"""

import numpy as np
import pytest
from oracle import X, assert_case, case, gradient_graph, run_ref, to_float64

from onnxplain.runtime.session import make_session

r = np.random.default_rng(4)
n = r.normal


def ax(*a):
    return np.array(a, dtype=np.int64)


def positive(*shape):
    return X(r.uniform(0.5, 2.0, size=shape))


def nonzero(*shape):
    return X(r.uniform(0.5, 1.5, size=shape) * r.choice([-1, 1], size=shape))


CASES = [
    case("ReduceSum", X(n(size=(2, 3, 4))), axes=[1], opset=11, id="sum-attr-opset11"),
    case("ReduceSum", X(n(size=(2, 3, 4))), axes=[-1, 0], keepdims=0, opset=11, id="sum-attr-neg-nokeep-opset11"),
    case("ReduceSum", X(n(size=(2, 3, 4))), keepdims=0, opset=11, id="sum-all-opset11"),
    case("ReduceSum", X(n(size=(2, 3, 4))), ax(1), keepdims=0, opset=13, id="sum-input-nokeep-opset13"),
    case("ReduceSum", X(n(size=(2, 3, 4))), ax(-2, -1), opset=13, id="sum-input-neg-keep-opset13"),
    case("ReduceSum", X(n(size=(2, 3, 4))), keepdims=0, opset=13, id="sum-no-axes-opset13"),
    case("ReduceSum", X(n(size=(2, 3, 4))), ax(), opset=13, id="sum-empty-axes-is-all"),
    case("ReduceSum", X(n(size=(2, 3, 4))), noop_with_empty_axes=1, opset=13, id="sum-noop"),
    case("ReduceSum", X(n(size=(3, 2, 4))), ax(0, 2), keepdims=0, dims={"x0": ["N", 2, 4]}, id="sum-symbolic-batch"),
    case("ReduceMean", X(n(size=(2, 3, 4, 4))), axes=[2, 3], keepdims=0, opset=11, id="mean-spatial-opset11"),
    case("ReduceMean", X(n(size=(2, 3, 4))), axes=[-1], opset=13, id="mean-last-opset13"),
    case("ReduceMean", X(n(size=(2, 3, 4))), ax(-2, -1), keepdims=0, opset=18, id="mean-input-opset18"),
    case("ReduceMean", X(n(size=(2, 3, 4))), opset=18, id="mean-all-keep-opset18"),
    case("ReduceMean", X(n(size=(2, 3, 4))), noop_with_empty_axes=1, opset=18, id="mean-noop-opset18"),
    case(
        "ReduceMean",
        X(n(size=(3, 2, 4))),
        ax(1),
        keepdims=0,
        opset=18,
        dims={"x0": ["N", 2, 4]},
        id="mean-symbolic-batch",
    ),
    case(
        "ReduceMean",
        X(n(size=(3, 2, 4))),
        axes=[0, 2],
        opset=13,
        dims={"x0": ["N", 2, "L"]},
        id="mean-over-symbolic-dims",
    ),
    case("ReduceMax", X(n(size=(2, 3, 4))), axes=[1], opset=11, id="max-attr-opset11"),
    case("ReduceMax", X(n(size=(2, 3, 4))), axes=[-1], keepdims=0, opset=13, id="max-neg-nokeep-opset13"),
    case("ReduceMax", X(n(size=(2, 3, 4))), ax(0, 2), keepdims=0, opset=18, id="max-input-opset18"),
    case("ReduceMax", X(n(size=(2, 3, 4))), keepdims=0, opset=20, id="max-all-opset20"),
    case("ReduceMax", X(n(size=(3, 2, 4))), ax(-1), opset=18, dims={"x0": ["N", 2, 4]}, id="max-symbolic-batch"),
    case("ReduceMin", X(n(size=(2, 3, 4))), axes=[2], keepdims=0, opset=11, id="min-attr-opset11"),
    case("ReduceMin", X(n(size=(2, 3, 4))), ax(1), opset=18, id="min-input-opset18"),
    case("ReduceMin", X(n(size=(2, 3, 4))), noop_with_empty_axes=1, opset=20, id="min-noop-opset20"),
    case("ReduceProd", nonzero(2, 3, 4), axes=[1], opset=11, id="prod-attr-opset11"),
    case("ReduceProd", nonzero(2, 3, 4), ax(-1), keepdims=0, opset=18, id="prod-input-opset18"),
    case("ReduceProd", nonzero(2, 3), keepdims=0, opset=13, id="prod-all-opset13"),
    case("ReduceSumSquare", X(n(size=(2, 3, 4))), axes=[1, 2], keepdims=0, opset=11, id="sumsquare-attr-opset11"),
    case("ReduceSumSquare", X(n(size=(2, 3, 4))), ax(0), opset=18, id="sumsquare-input-opset18"),
    case("ReduceL2", X(n(size=(2, 3, 4))), axes=[-1], opset=11, id="l2-attr-opset11"),
    case("ReduceL2", X(n(size=(2, 3, 4))), ax(1, 2), keepdims=0, opset=18, id="l2-input-opset18"),
    case("ReduceL2", X(n(size=(3, 2, 4))), keepdims=0, opset=18, dims={"x0": ["N", 2, 4]}, id="l2-all-symbolic"),
    case("ReduceL1", X(n(size=(2, 3, 4))), axes=[1], opset=13, id="l1-attr-opset13"),
    case("ReduceL1", X(n(size=(2, 3, 4))), ax(-1), keepdims=0, opset=18, id="l1-input-opset18"),
    case("ReduceLogSum", positive(2, 3, 4), axes=[2], opset=11, id="logsum-attr-opset11"),
    case("ReduceLogSum", positive(2, 3, 4), ax(0, 1), keepdims=0, opset=18, id="logsum-input-opset18"),
    case("ReduceLogSumExp", X(n(size=(2, 3, 4))), axes=[1], keepdims=0, opset=13, id="logsumexp-attr-opset13"),
    case("ReduceLogSumExp", X(n(size=(2, 3, 4)) * 3), ax(-1), opset=18, id="logsumexp-input-opset18"),
    case("ReduceLogSumExp", X(n(size=(2, 3))), opset=18, id="logsumexp-all-opset18"),
]


@pytest.mark.parametrize("c", CASES, ids=repr)
def test_vjp(c):
    assert_case(c)


def exported_grad(c, w):
    g32 = make_session(gradient_graph(c.model, "x0", "y0")).run(
        ["attribution"], {"x0": c.feeds["x0"], "target_weights": w.astype(np.float32)}
    )[0]
    g64 = run_ref(
        gradient_graph(to_float64(c.model), "x0", "y0"), {"x0": c.feeds["x0"].astype(np.float64), "target_weights": w}
    )["attribution"]
    return g32, g64


@pytest.mark.parametrize("op,opset", [("ReduceMax", 13), ("ReduceMax", 18), ("ReduceMin", 11), ("ReduceMin", 20)])
def test_extremum_ties_split_evenly(op, opset):
    """Tied extrema share the cotangent evenly, as torch.amax/amin."""
    x = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0], [-1.0, -1.0, 0.5, -1.0]])
    axes = {"axes": [1]} if opset < 18 else {}
    c = case(op, X(x), *([] if opset < 18 else [ax(1)]), keepdims=0, opset=opset, **axes)
    w = np.array([6.0, -4.0, 3.0])
    best = x.max(1, keepdims=True) if op == "ReduceMax" else x.min(1, keepdims=True)
    hit = (x == best).astype(float)
    want = hit * w[:, None] / hit.sum(1, keepdims=True)
    g32, g64 = exported_grad(c, w)
    np.testing.assert_allclose(g64, want, atol=1e-12)
    np.testing.assert_allclose(g32, want, atol=1e-6)


def test_norms_at_zero():
    """PyTorch's conventions where the norm is not differentiable: ReduceL2 and ReduceL1 pass 0 at 0."""
    x = np.array([[0.0, 0.0, 0.0], [3.0, 0.0, -4.0]])
    w = np.array([2.0, 5.0])
    c = case("ReduceL2", X(x), axes=[1], keepdims=0, opset=13)
    g32, g64 = exported_grad(c, w)
    want = np.array([[0.0, 0.0, 0.0], [3.0, 0.0, -4.0]]) / 5.0 * 5.0
    np.testing.assert_allclose(g64, want, atol=1e-12)
    np.testing.assert_allclose(g32, want, atol=1e-6)
    c = case("ReduceL1", X(x), axes=[1], keepdims=0, opset=13)
    g32, g64 = exported_grad(c, w)
    want = np.array([[0.0, 0.0, 0.0], [5.0, 0.0, -5.0]])
    np.testing.assert_allclose(g64, want, atol=1e-12)
    np.testing.assert_allclose(g32, want, atol=1e-6)
