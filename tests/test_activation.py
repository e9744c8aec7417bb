"""Oracle tests for activation VJPs (finite differences in float64) and their values at kinks.

Finite differences cannot see a kink, so ``test_kinks`` compares the exported gradient (run in
onnxruntime) at the kink points with PyTorch's convention, written as a small numpy formula.
"""

import numpy as np
import pytest
from oracle import X, assert_case, case, gradient_graph

from onnxplain.runtime.session import make_session

r = np.random.default_rng(2)
n = r.normal


def away(shape, *kinks, scale=1.0, eps=0.05):
    """Normal values (times ``scale``) kept at least ``eps`` away from each kink (default 0), so that
    central differences never straddle one."""
    v = n(size=shape) * scale
    for k in kinks or (0.0,):
        v = np.where(np.abs(v - k) < eps, k + 2 * eps * np.where(v >= k, 1, -1), v)
    return v


CASES = [
    case("Relu", X(away((2, 3, 4))), opset=11, id="relu-opset11"),
    case("Relu", X(away((2, 3, 4))), opset=14, id="relu-opset14"),
    case("LeakyRelu", X(away((2, 5))), id="leakyrelu-default"),
    case("LeakyRelu", X(away((2, 5))), alpha=0.3, opset=16, id="leakyrelu-alpha"),
    case("PRelu", X(away((2, 3, 2, 2))), n(size=(3, 1, 1)), id="prelu-channel-slope-const"),
    case("PRelu", X(away((2, 3, 2, 2))), X(n(size=(3, 1, 1))), id="prelu-channel-slope-diff"),
    case("PRelu", X(away((2, 4))), X(n(size=(1,))), opset=11, id="prelu-scalar-slope-opset11"),
    case("PRelu", X(away((2, 3, 4))), X(n(size=(4,))), opset=16, id="prelu-last-axis-slope-opset16"),
    case("Elu", X(away((3, 4))), id="elu-default"),
    case("Elu", X(away((3, 4))), alpha=0.5, opset=22, id="elu-alpha-opset22"),
    case("Selu", X(away((3, 4))), id="selu-default"),
    case("Selu", X(away((3, 4))), alpha=1.5, gamma=0.9, opset=22, id="selu-attrs-opset22"),
    case("Celu", X(away((3, 4))), opset=12, id="celu-default"),
    case("Celu", X(away((3, 4))), alpha=2.0, opset=22, id="celu-alpha"),
    case("ThresholdedRelu", X(away((3, 4), 1.0)), opset=11, id="thresholdedrelu-default"),
    case("ThresholdedRelu", X(away((3, 4), 0.4)), alpha=0.4, opset=22, id="thresholdedrelu-alpha"),
    case("Clip", X(away((3, 4), 0, 6, scale=4)), np.float32(0), np.float32(6), opset=11, id="clip-relu6-opset11"),
    case("Clip", X(away((3, 4), -0.5, 0.5)), np.float32(-0.5), np.float32(0.5), opset=12, id="clip-both-opset12"),
    case("Clip", X(away((3, 4), 0.5)), None, np.float32(0.5), opset=13, id="clip-max-only"),
    case("Clip", X(away((3, 4), -0.5)), np.float32(-0.5), opset=13, id="clip-min-only"),
    case("Clip", X(n(size=(3, 4))), opset=13, id="clip-no-bounds"),
    case(
        "Clip",
        X(away((4, 5), -0.3, 0.5)),
        X(np.float32(-0.3)),
        X(np.float32(0.5)),
        opset=13,
        id="clip-differentiable-bounds",
    ),
    case("Sigmoid", X(n(size=(3, 4))), opset=11, id="sigmoid-opset11"),
    case("Sigmoid", X(n(size=(3, 4))), opset=13, id="sigmoid-opset13"),
    case("HardSigmoid", X(away((3, 4), -2.5, 2.5, scale=3)), id="hardsigmoid-default"),
    case("HardSigmoid", X(away((3, 4), -3, 3, scale=4)), alpha=1 / 6, beta=0.5, opset=22, id="hardsigmoid-torch"),
    case("HardSwish", X(away((3, 4), -3, 3, scale=4)), opset=14, id="hardswish-opset14"),
    case("HardSwish", X(away((3, 4), -3, 3, scale=4)), opset=22, id="hardswish-opset22"),
    case("Tanh", X(n(size=(3, 4))), opset=11, id="tanh-opset11"),
    case("Tanh", X(n(size=(3, 4))), opset=13, id="tanh-opset13"),
    case("Softplus", X(n(size=(3, 4)) * 3), id="softplus"),
    case("Softsign", X(away((3, 4))), id="softsign"),
    case("Erf", X(n(size=(3, 4))), opset=11, id="erf-opset11"),
    case("Erf", X(n(size=(3, 4))), opset=13, id="erf-opset13"),
    case("Gelu", X(n(size=(3, 4)) * 2), opset=20, id="gelu-exact"),
    case("Gelu", X(n(size=(3, 4)) * 2), opset=20, approximate="tanh", id="gelu-tanh"),
    case("Mish", X(n(size=(3, 4)) * 2), opset=18, id="mish-opset18"),
    case("Mish", X(n(size=(3, 4)) * 2), opset=22, id="mish-opset22"),
    case("Swish", X(n(size=(3, 4)) * 2), opset=24, id="swish-default"),
    case("Swish", X(n(size=(3, 4)) * 2), opset=24, alpha=1.7, id="swish-alpha"),
    case("Sin", X(n(size=(3, 4))), id="sin"),
    case("Cos", X(n(size=(3, 4))), id="cos"),
    # Softmax/LogSoftmax: before opset 13 the input is coerced to 2-D at `axis` (default 1)
    case("Softmax", X(n(size=(2, 3, 4))), opset=11, id="softmax-opset11-default-axis-rank3"),
    case("Softmax", X(n(size=(2, 3, 4, 2))), opset=11, axis=2, id="softmax-opset11-axis2-rank4"),
    case("Softmax", X(n(size=(2, 3, 4, 2))), opset=11, axis=-3, id="softmax-opset11-axis-neg3-rank4"),
    case("Softmax", X(n(size=(2, 3, 4))), opset=13, id="softmax-opset13-default-axis"),
    case("Softmax", X(n(size=(2, 3, 4, 2))), opset=13, axis=1, id="softmax-opset13-axis1-rank4"),
    case("Softmax", X(n(size=(2, 3, 4))), opset=18, axis=-2, id="softmax-opset18-axis-neg2"),
    case("LogSoftmax", X(n(size=(2, 3, 4))), opset=11, id="logsoftmax-opset11-default-axis-rank3"),
    case("LogSoftmax", X(n(size=(2, 3, 4, 2))), opset=11, axis=2, id="logsoftmax-opset11-axis2-rank4"),
    case("LogSoftmax", X(n(size=(2, 3, 4))), opset=13, id="logsoftmax-opset13-default-axis"),
    case("LogSoftmax", X(n(size=(2, 3, 4, 2))), opset=13, axis=1, id="logsoftmax-opset13-axis1-rank4"),
    case("LogSoftmax", X(n(size=(2, 3, 4))), opset=18, axis=0, id="logsoftmax-opset18-axis0"),
]


@pytest.mark.parametrize("c", CASES, ids=repr)
def test_vjp(c):
    assert_case(c)


# ---- exact gradients at kinks: PyTorch's convention ------------------------------------------


def exported_grad(c, wrt="x0", w=None):
    """The gradient of sum(w * y) w.r.t. ``wrt`` from the exported graph, run in onnxruntime."""
    y_shape = make_session(c.model).run([c.output], c.feeds)[0].shape
    w = np.ones(y_shape, np.float32) if w is None else np.asarray(w, np.float32)
    sess = make_session(gradient_graph(c.model, wrt, c.output))
    return sess.run(["attribution"], {**c.feeds, "target_weights": w})[0]


f32 = np.float32
K = np.array([-3, -2.5, -1, -0.5, 0, 0.5, 1, 2.5, 3, 6, 7], f32)  # every kink below, and neighbours


def torch_hardswish(x):  # hardswish_backward
    return np.where(x < -3, 0, np.where(x <= 3, x / 3 + 0.5, 1))


KINKS = [
    ("relu", case("Relu", X(K)), lambda x: (x > 0) * 1.0),
    ("leakyrelu", case("LeakyRelu", X(K), alpha=0.1), lambda x: np.where(x > 0, 1, 0.1)),
    ("prelu", case("PRelu", X(K), np.array([0.25], f32)), lambda x: np.where(x > 0, 1, 0.25)),
    ("elu", case("Elu", X(K), alpha=0.5), lambda x: np.where(x > 0, 1, 0.5 * np.exp(x))),
    ("celu", case("Celu", X(K), alpha=2.0, opset=12), lambda x: np.where(x > 0, 1, np.exp(x / 2))),
    (
        "selu",
        case("Selu", X(K)),
        lambda x: np.where(x > 0, 1.0507009873554805, 1.0507009873554805 * 1.6732632423543772 * np.exp(x)),
    ),
    ("thresholdedrelu", case("ThresholdedRelu", X(K), alpha=1.0), lambda x: (x > 1) * 1.0),
    ("relu6", case("Clip", X(K), f32(0), f32(6), opset=11), lambda x: ((x > 0) & (x < 6)) * 1.0),  # nn.ReLU6
    ("clip-min", case("Clip", X(K), f32(-0.5), opset=13), lambda x: (x > -0.5) * 1.0),
    ("clip-max", case("Clip", X(K), None, f32(0.5), opset=13), lambda x: (x < 0.5) * 1.0),
    ("hardsigmoid", case("HardSigmoid", X(K)), lambda x: ((x > -2.5) & (x < 2.5)) * 0.2),
    ("hardsigmoid-torch", case("HardSigmoid", X(K), alpha=1 / 6, beta=0.5), lambda x: ((x > -3) & (x < 3)) / 6),
    ("hardswish", case("HardSwish", X(K), opset=14), torch_hardswish),
    ("softsign", case("Softsign", X(K)), lambda x: 1 / (1 + np.abs(x)) ** 2),
]


@pytest.mark.parametrize("name,c,ref", KINKS, ids=[k[0] for k in KINKS])
def test_kinks(name, c, ref):
    np.testing.assert_allclose(exported_grad(c), ref(K.astype(np.float64)), rtol=1e-6, atol=1e-7)


def test_clip_bound_gradients_at_kinks():
    """dlo = g [x < lo], dhi = g [x > hi]: a value exactly at a bound sends its gradient nowhere."""
    c = case("Clip", X(K), X(f32(-0.5)), X(f32(0.5)), opset=13)
    assert exported_grad(c, "x1") == pytest.approx(np.sum(K < -0.5))
    assert exported_grad(c, "x2") == pytest.approx(np.sum(K > 0.5))


def test_clip_min_above_max():
    """ONNX gives ``max`` everywhere when min > max; all of the gradient goes to ``max`` (as PyTorch)."""
    c = case("Clip", X(K), X(f32(1.0)), X(f32(-1.0)), opset=13)
    np.testing.assert_array_equal(exported_grad(c, "x0"), np.zeros_like(K))
    assert exported_grad(c, "x1") == 0
    assert exported_grad(c, "x2") == pytest.approx(K.size)


def test_prelu_slope_at_zero():
    """dslope = g x [x <= 0]; at x = 0 that is 0 whatever the side."""
    c = case("PRelu", X(K), X(np.array([0.25], f32)))
    np.testing.assert_allclose(exported_grad(c, "x1"), [np.sum(np.minimum(K, 0))], rtol=1e-6)
