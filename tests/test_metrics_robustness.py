"""Max-sensitivity and class sensitivity with explainers whose answers are known analytically."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from scipy.stats import spearmanr

from onnxplain import Explainer
from onnxplain.errors import OnnxplainError
from onnxplain.evaluation.metrics.robustness import class_sensitivity, least_likely, max_sensitivity

N, C, H, W, K = 3, 1, 8, 8, 4
RNG = np.random.default_rng(0)
X = RNG.uniform(0, 1, size=(N, C, H, W)).astype(np.float32)
T = np.array([0, 1, 3], dtype=np.int64)
WEIGHTS = RNG.normal(size=(K, C * H * W))  # a linear model z = W x: its gradient for class t is W[t]


def linear_gradient(x, target):
    """Gradient map of z_t = W[t] . x, channels summed: W[t] reshaped, whatever x is."""
    return WEIGHTS[target].reshape(len(target), C, H, W).sum(axis=1)


def identity(x, target):
    """Phi(x) = x (channels summed)."""
    return np.asarray(x, dtype=np.float64).sum(axis=1)


def linear_onnx(weights) -> onnx.ModelProto:
    """x[N,1,H,W] -> Reshape -> Gemm(W) -> logits [N, K]: the gradient for class t is W[t]."""
    inits = [
        numpy_helper.from_array(weights.astype(np.float32), "W"),
        numpy_helper.from_array(np.array([-1, C * H * W], dtype=np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "W"], ["logits"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", C, H, W])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", len(weights)])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


# --- max-sensitivity -------------------------------------------------------------------------


def test_map_independent_of_x_has_zero_sensitivity():
    out = max_sensitivity(linear_gradient, X, T, radius=0.1, samples=5)
    assert out.shape == (N,) and (out == 0).all()


def test_identity_map_matches_independent_draws():
    radius, samples, seed = 0.05, 7, 3
    out = max_sensitivity(identity, X, T, radius=radius, samples=samples, seed=seed)
    # oracle: the documented draw order, computed per image without the float32 round trip
    rng = np.random.default_rng(seed)
    r = radius * (X.reshape(N, -1).max(1) - X.reshape(N, -1).min(1)).astype(np.float64)
    draws = [rng.uniform(-1, 1, size=X.shape) * r[:, None, None, None] for _ in range(samples)]
    for i in range(N):
        want = max(np.linalg.norm(d[i].sum(0)) for d in draws) / np.linalg.norm(X[i].sum(0))
        assert out[i] == pytest.approx(want, rel=1e-5)
        bound = r[i] * np.sqrt(H * W) / np.linalg.norm(X[i].sum(0))  # ||d||_2 <= r sqrt(HW) for C = 1
        assert 0 < out[i] <= bound


def test_radius_zero_gives_zero_and_radius_is_monotone():
    assert (max_sensitivity(identity, X, T, radius=0.0, samples=3) == 0).all()
    values = [max_sensitivity(identity, X, T, radius=r, samples=4, seed=1) for r in (0.01, 0.02, 0.05)]
    assert (values[0] < values[1]).all() and (values[1] < values[2]).all()
    # for Phi(x) = x the same draws scale linearly with the radius
    assert np.allclose(values[2], 5 * values[0], rtol=1e-4)


def test_explain_calls_and_progress():
    calls, ticks = [], []

    def spy(x, target):
        calls.append((len(x), target.copy()))
        return identity(x, target)

    max_sensitivity(spy, X, T, samples=4, progress=lambda d, t: ticks.append((d, t)))
    assert len(calls) == 5  # the unperturbed map, then one call per sample
    assert all(n <= N * 4 for n, _ in calls)
    assert all((t == T).all() for _, t in calls)  # always explains the given target
    assert ticks == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_seed_reproducible_and_zero_map_is_nan():
    a = max_sensitivity(identity, X, T, samples=3, seed=5)
    b = max_sensitivity(identity, X, T, samples=3, seed=5)
    c = max_sensitivity(identity, X, T, samples=3, seed=6)
    assert (a == b).all() and not (a == c).all()
    zero = max_sensitivity(lambda x, t: np.zeros((len(x), H, W)), X, T, samples=2)
    assert np.isnan(zero).all()


def test_max_sensitivity_bad_input():
    for radius in (-0.1, float("nan"), "0.1"):
        with pytest.raises(OnnxplainError, match="radius"):
            max_sensitivity(identity, X, T, radius=radius)
    for samples in (0, -3, 1.5):
        with pytest.raises(OnnxplainError, match="samples"):
            max_sensitivity(identity, X, T, samples=samples)
    with pytest.raises(OnnxplainError, match="target"):
        max_sensitivity(identity, X, T[:2])
    with pytest.raises(OnnxplainError, match=r"\[N, C, H, W\]"):
        max_sensitivity(identity, X[0], T)
    with pytest.raises(OnnxplainError, match="explain returned shape"):
        max_sensitivity(lambda x, t: np.zeros((len(x), H, W + 1)), X, T)


# --- class sensitivity -----------------------------------------------------------------------


def test_class_blind_map_scores_one():
    out = class_sensitivity(identity, X, T, np.array([1, 2, 0]))
    assert set(out) == {"spearman", "spearman_abs", "ssim"}
    for key in out:
        assert out[key].shape == (N,)
        assert np.allclose(out[key], 1.0)


def test_linear_gradient_spearman_equals_weight_row_correlation():
    other = np.array([2, 3, 0], dtype=np.int64)
    out = class_sensitivity(linear_gradient, X, T, other)
    for i in range(N):
        a, b = WEIGHTS[T[i]], WEIGHTS[other[i]]
        assert out["spearman"][i] == pytest.approx(spearmanr(a, b)[0], abs=1e-12)
        assert out["spearman_abs"][i] == pytest.approx(spearmanr(np.abs(a), np.abs(b))[0], abs=1e-12)
    assert (out["spearman"] < 0.9).all()  # random weight rows: a class-sensitive map


def test_opposite_maps():
    # class `other`'s map is the negative of the target's: rank correlation -1, of magnitudes 1
    out = class_sensitivity(
        lambda x, t: identity(x, t) * np.where(t == 9, -1.0, 1.0)[:, None, None], X, T, np.full(N, 9)
    )
    assert np.allclose(out["spearman"], -1.0) and np.allclose(out["spearman_abs"], 1.0)


def test_class_sensitivity_through_explainer_gradient():
    ex = Explainer(linear_onnx(WEIGHTS))

    def grad(x, target):
        return ex.run(x, "gradient", target=target).attribution.sum(axis=1)

    z = WEIGHTS @ X.reshape(N, -1).T.astype(np.float64)
    other = least_likely(z.T)
    assert (other == z.argmin(axis=0)).all()
    out = class_sensitivity(grad, X, T, other)
    for i in range(N):
        want = spearmanr(WEIGHTS[T[i]].astype(np.float32), WEIGHTS[other[i]].astype(np.float32))[0]
        assert out["spearman"][i] == pytest.approx(want, abs=1e-9)
    # the gradient of a linear model does not depend on x
    assert np.allclose(max_sensitivity(grad, X, T, radius=0.1, samples=2), 0.0, atol=1e-6)


def test_class_sensitivity_bad_input():
    with pytest.raises(OnnxplainError, match="other"):
        class_sensitivity(identity, X, T, np.array([1, 2]))
    with pytest.raises(OnnxplainError, match="other"):
        class_sensitivity(identity, X, T, np.array([1, -1, 2]))
    with pytest.raises(OnnxplainError, match="target"):
        class_sensitivity(identity, X, T.astype(float), T)


def test_least_likely():
    z = np.array([[3.0, 1.0, 2.0], [0.0, 5.0, -1.0], [2.0, 2.0, 2.0]])
    out = least_likely(z)
    assert out.dtype == np.int64 and out.tolist() == [1, 2, 0]
    for bad in (np.zeros(3), np.zeros((2, 1)), np.zeros((0, 3)), np.array([[1.0, np.nan]])):
        with pytest.raises(OnnxplainError, match="logits"):
            least_likely(bad)
